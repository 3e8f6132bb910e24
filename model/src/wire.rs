//! A zero-copy reader of the protobuf wire format: fields of one message as borrowed slices.
//!
//! The agent reads OTLP requests with it and the collector reads batches' spans with it
//! ([`crate::span_ref`]): prost would allocate every string and id of a span only for it to be
//! copied once more into a COPY row and dropped. Unknown fields are returned like any other,
//! for the caller to skip, as protobuf requires of readers.

/// A body that is not a well-formed protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(m.into()))
}

/// A length-delimited field as text; `what` names it in the error.
pub fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError(format!("{what} is not valid UTF-8")))
}

/// A field's payload.
pub enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    /// Skipped: no field read with this reader is fixed32.
    Fixed32,
}

/// What [`Reader::next`] returns: the next (field number, payload), `None` at the end.
pub type Next<'a> = Result<Option<(u32, Field<'a>)>, WireError>;

/// Iterates the fields of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes read so far: a field's raw bytes, key included, are `buf[before..after]` of the
    /// positions around [`Reader::next`].
    pub fn position(&self) -> usize {
        self.pos
    }

    /// A varint at the reader's position (packed repeated fields are runs of them).
    #[inline]
    pub fn varint(&mut self) -> Result<u64, WireError> {
        // Field keys and most lengths are one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return err("truncated varint");
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        err("varint longer than 10 bytes")
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return err("field length exceeds the message");
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field number, payload), or `None` at the end.
    ///
    /// Nearly every field of a span has a one-byte key, and most length-delimited ones (ids,
    /// attribute keys, short values) a one-byte length: those are read here in a few
    /// instructions; anything else, and every error, takes [`Reader::next_general`].
    // Not an `Iterator`: a malformed field ends the message with an error, not an item.
    #[allow(clippy::should_implement_trait)]
    #[inline(always)]
    pub fn next(&mut self) -> Next<'a> {
        let buf = self.buf;
        let pos = self.pos;
        let Some(&key) = buf.get(pos) else {
            return Ok(None);
        };
        if (8..0x80).contains(&key) {
            let number = u32::from(key >> 3);
            match key & 7 {
                // A one-byte length (attributes, ids), or two (a span, a long statement); an
                // empty last field, too short for this, takes the general path.
                2 => {
                    if let Some(&[n, m]) = buf.get(pos + 1..pos + 3) {
                        let (start, len) = if n < 0x80 {
                            (pos + 2, usize::from(n))
                        } else {
                            (pos + 3, usize::from(n & 0x7f) | usize::from(m) << 7)
                        };
                        let end = start + len;
                        if (n < 0x80 || m < 0x80) && end <= buf.len() {
                            self.pos = end;
                            return Ok(Some((number, Field::Len(&buf[start..end]))));
                        }
                    }
                }
                0 => {
                    if let Some(&v) = buf.get(pos + 1) {
                        if v < 0x80 {
                            self.pos = pos + 2;
                            return Ok(Some((number, Field::Varint(u64::from(v)))));
                        }
                    }
                }
                1 => {
                    if let Some(b) = buf.get(pos + 1..pos + 9) {
                        self.pos = pos + 9;
                        let v = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                        return Ok(Some((number, Field::Fixed64(v))));
                    }
                }
                _ => {}
            }
        }
        self.next_general()
    }

    /// [`Reader::next`] for any field, errors included.
    #[cold]
    #[inline(never)]
    fn next_general(&mut self) -> Next<'a> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = (key >> 3) as u32;
        if number == 0 {
            return err("field number 0");
        }
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| WireError("length overflows".to_owned()))?;
                Field::Len(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            w => return err(format!("unsupported wire type {w} (field {number})")),
        };
        Ok(Some((number, field)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field `next` reads (None at the end, `Err` as a string) via `step`.
    fn fields<'a>(
        buf: &'a [u8],
        step: fn(&mut Reader<'a>) -> Next<'a>,
    ) -> Vec<Result<(u32, String), String>> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        loop {
            match step(&mut r) {
                Ok(None) => return out,
                Ok(Some((n, f))) => out.push(Ok((
                    n,
                    match f {
                        Field::Varint(v) => format!("varint {v}"),
                        Field::Fixed64(v) => format!("fixed64 {v}"),
                        Field::Len(b) => format!("len {b:?}"),
                        Field::Fixed32 => "fixed32".to_string(),
                    },
                ))),
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn the_one_byte_fast_path_reads_what_the_general_reader_reads() {
        // Messages of random fields: field numbers on one and two key bytes, every wire type,
        // varints and lengths on one and more bytes; then every truncation and every one-byte
        // corruption of them.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let varint = |out: &mut Vec<u8>, mut v: u64| loop {
            if v < 0x80 {
                out.push(v as u8);
                break;
            }
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        };
        for _ in 0..300 {
            let mut msg = Vec::new();
            for _ in 0..rnd(8) {
                let number = [1, 2, 9, 15, 16, 100][rnd(6) as usize];
                let wire = [0, 1, 2, 5][rnd(4) as usize];
                varint(&mut msg, number << 3 | wire);
                match wire {
                    0 => varint(&mut msg, [0, 1, 127, 128, 300, u64::MAX][rnd(6) as usize]),
                    1 => msg.extend_from_slice(&rnd(u64::MAX).to_le_bytes()),
                    2 => {
                        let len = [0, 1, 16, 127, 128, 200, 300][rnd(7) as usize];
                        varint(&mut msg, len);
                        msg.extend((0..len).map(|i| i as u8));
                    }
                    _ => msg.extend_from_slice(&[1, 2, 3, 4]),
                }
            }
            let general = |b: &[u8]| fields(b, |r| r.next_general());
            let fast = |b: &[u8]| fields(b, |r| r.next());
            assert_eq!(fast(&msg), general(&msg));
            for cut in 0..msg.len() {
                assert_eq!(fast(&msg[..cut]), general(&msg[..cut]), "cut at {cut}");
            }
            for at in 0..msg.len() {
                let mut bad = msg.clone();
                bad[at] = rnd(256) as u8;
                assert_eq!(fast(&bad), general(&bad), "byte {at} = {}", bad[at]);
            }
        }
    }
}
