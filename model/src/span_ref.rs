//! A span borrowed from a batch's body: what the collector validates and stores.
//!
//! Decoding a batch with prost made every string, id and attribute of a kept span its own
//! allocation, and every attribute a B-tree node, only for the collector to copy them into a
//! COPY row and free them: a quarter of its CPU at 50 agents. [`SpanRef::decode`] reads the
//! [`Span`] message in place instead ([`crate::wire`]); a text cut by validation becomes owned.

use std::borrow::Cow;

use crate::span::{flag_bits, Span};
use crate::wire::{utf8, Field, Reader, WireError};

/// An attribute of a [`SpanRef`].
pub type Attribute<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The fields of a [`Span`], text and ids borrowed. Field meanings are [`Span`]'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub service: Cow<'a, str>,
    pub instance: Cow<'a, str>,
    pub operation: Cow<'a, str>,
    pub kind: i32,
    pub class: i32,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub status: i32,
    pub status_message: Cow<'a, str>,
    pub http_status: u32,
    pub peer: Cow<'a, str>,
    pub db_system: Cow<'a, str>,
    pub db_role: i32,
    pub statement: Cow<'a, str>,
    pub rows: Option<i64>,
    /// Sorted by key, keys unique (on the wire a map: the last value of a key wins).
    pub attributes: Vec<Attribute<'a>>,
    pub kept: i32,
    pub flags: Vec<i32>,
    pub replica_lag_ms: Option<i64>,
}

impl<'a> From<&'a Span> for SpanRef<'a> {
    fn from(s: &'a Span) -> Self {
        SpanRef {
            trace_id: &s.trace_id,
            span_id: &s.span_id,
            parent_span_id: &s.parent_span_id,
            service: Cow::Borrowed(&s.service),
            instance: Cow::Borrowed(&s.instance),
            operation: Cow::Borrowed(&s.operation),
            kind: s.kind,
            class: s.class,
            start_ns: s.start_ns,
            duration_ns: s.duration_ns,
            status: s.status,
            status_message: Cow::Borrowed(&s.status_message),
            http_status: s.http_status,
            peer: Cow::Borrowed(&s.peer),
            db_system: Cow::Borrowed(&s.db_system),
            db_role: s.db_role,
            statement: Cow::Borrowed(&s.statement),
            rows: s.rows,
            attributes: s
                .attributes
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
            kept: s.kept,
            flags: s.flags.clone(),
            replica_lag_ms: s.replica_lag_ms,
        }
    }
}

fn text<'a>(b: &'a [u8], field: &str) -> Result<Cow<'a, str>, WireError> {
    utf8(b, field).map(Cow::Borrowed)
}

/// One `attributes` map entry: key 1, value 2, either missing meaning empty.
fn attribute(b: &[u8]) -> Result<Attribute<'_>, WireError> {
    let mut r = Reader::new(b);
    let (mut key, mut value) = (Cow::Borrowed(""), Cow::Borrowed(""));
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Len(b)) => key = text(b, "attribute key")?,
            (2, Field::Len(b)) => value = text(b, "attribute value")?,
            (1 | 2, _) => return Err(WireError("attribute has the wrong wire type".into())),
            _ => {}
        }
    }
    Ok((key, value))
}

/// Sorts attributes by key and keeps the last value of each key, as a map would.
pub(crate) fn sort_attributes(attributes: &mut Vec<Attribute<'_>>) {
    if attributes.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    // Stable: among equal keys the last one read stays last, and is the one kept.
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut i = attributes.len();
    while i > 1 {
        i -= 1;
        if attributes[i - 1].0 == attributes[i].0 {
            attributes.remove(i - 1);
        }
    }
}

impl<'a> SpanRef<'a> {
    /// Reads one `Span` message (`model/proto/stormwatch.proto`), as prost would: the last
    /// value of a scalar wins, unknown fields are skipped, repeated flags packed or not.
    pub fn decode(buf: &'a [u8]) -> Result<SpanRef<'a>, WireError> {
        let mut r = Reader::new(buf);
        let mut s = SpanRef::default();
        while let Some((n, f)) = r.next()? {
            match (n, f) {
                (1, Field::Len(b)) => s.trace_id = b,
                (2, Field::Len(b)) => s.span_id = b,
                (3, Field::Len(b)) => s.parent_span_id = b,
                (4, Field::Len(b)) => s.service = text(b, "service")?,
                (5, Field::Len(b)) => s.instance = text(b, "instance")?,
                (6, Field::Len(b)) => s.operation = text(b, "operation")?,
                (7, Field::Varint(v)) => s.kind = v as i32,
                (8, Field::Varint(v)) => s.class = v as i32,
                (9, Field::Varint(v)) => s.start_ns = v as i64,
                (10, Field::Varint(v)) => s.duration_ns = v as i64,
                (11, Field::Varint(v)) => s.status = v as i32,
                (12, Field::Len(b)) => s.status_message = text(b, "status_message")?,
                (13, Field::Varint(v)) => s.http_status = v as u32,
                (14, Field::Len(b)) => s.peer = text(b, "peer")?,
                (15, Field::Len(b)) => s.db_system = text(b, "db_system")?,
                (16, Field::Varint(v)) => s.db_role = v as i32,
                (17, Field::Len(b)) => s.statement = text(b, "statement")?,
                (18, Field::Varint(v)) => s.rows = Some(v as i64),
                (19, Field::Len(b)) => {
                    // A span with attributes has several: one allocation, not three.
                    if s.attributes.is_empty() {
                        s.attributes.reserve(8);
                    }
                    s.attributes.push(attribute(b)?);
                }
                (20, Field::Varint(v)) => s.kept = v as i32,
                (21, Field::Varint(v)) => s.flags.push(v as i32),
                (21, Field::Len(packed)) => {
                    let mut p = Reader::new(packed);
                    while p.position() < packed.len() {
                        s.flags.push(p.varint()? as i32);
                    }
                }
                (22, Field::Varint(v)) => s.replica_lag_ms = Some(v as i64),
                (1..=22, _) => return Err(WireError(format!("field {n} has the wrong wire type"))),
                _ => {}
            }
        }
        sort_attributes(&mut s.attributes);
        Ok(s)
    }

    /// The owned [`Span`].
    pub fn into_owned(self) -> Span {
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_span_id.to_vec(),
            service: self.service.into_owned(),
            instance: self.instance.into_owned(),
            operation: self.operation.into_owned(),
            kind: self.kind,
            class: self.class,
            start_ns: self.start_ns,
            duration_ns: self.duration_ns,
            status: self.status,
            status_message: self.status_message.into_owned(),
            http_status: self.http_status,
            peer: self.peer.into_owned(),
            db_system: self.db_system.into_owned(),
            db_role: self.db_role,
            statement: self.statement.into_owned(),
            rows: self.rows,
            attributes: self
                .attributes
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            kept: self.kept,
            flags: self.flags,
            replica_lag_ms: self.replica_lag_ms,
        }
    }

    /// End time, nanoseconds since the Unix epoch.
    pub fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(self.duration_ns)
    }

    /// Flags as a bit set, as [`Span::flag_bits`].
    pub fn flag_bits(&self) -> i32 {
        flag_bits(&self.flags)
    }

    /// The attributes as a JSON object, keys in order, appended to `out`.
    pub fn write_attributes_json(&self, out: &mut Vec<u8>) {
        struct AsMap<'b, 'a>(&'b [Attribute<'a>]);
        impl serde::Serialize for AsMap<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
            }
        }
        serde_json::to_writer(out, &AsMap(&self.attributes)).expect("text always serializes");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::*;
    use crate::enums::{DependencyClass, KeepReason, SpanFlag, SpanStatus};

    fn span() -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            parent_span_id: vec![9; 8],
            service: "checkout".into(),
            instance: "web-1".into(),
            operation: "SELECT posts".into(),
            kind: 3,
            class: DependencyClass::Db as i32,
            start_ns: 1_700_000_000_123_456_789,
            duration_ns: 4_000_000,
            status: SpanStatus::Error as i32,
            status_message: "timeout ✓".into(),
            http_status: 503,
            peer: "db:5432".into(),
            db_system: "postgresql".into(),
            db_role: 2,
            statement: "SELECT * FROM posts WHERE id = ?".into(),
            rows: Some(-1),
            attributes: BTreeMap::from([
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "".to_owned()),
                ("ünï".to_owned(), "çødé".to_owned()),
            ]),
            kept: KeepReason::Slow as i32,
            flags: vec![SpanFlag::Slow as i32, SpanFlag::FullScanSuspect as i32],
            replica_lag_ms: Some(0),
        }
    }

    #[test]
    fn reads_what_prost_writes() {
        for s in [span(), Span::default()] {
            let body = s.encode_to_vec();
            let r = SpanRef::decode(&body).unwrap();
            assert_eq!(r, SpanRef::from(&s));
            assert_eq!(r.into_owned(), s);
        }
    }

    /// Map entries out of order and repeated, flags unpacked, an unknown field: what another
    /// encoder may write and prost reads.
    #[test]
    fn reads_what_other_encoders_may_write_as_prost_does() {
        let mut body = span().encode_to_vec();
        let entry = |k: &str, v: &str| {
            let mut e = vec![0x0a, k.len() as u8];
            e.extend_from_slice(k.as_bytes());
            e.extend([0x12, v.len() as u8]);
            e.extend_from_slice(v.as_bytes());
            let mut f = vec![0x9a, 0x01, e.len() as u8];
            f.extend(e);
            f
        };
        body.extend(entry("b", "last"));
        body.extend(entry("0", "first"));
        body.extend([0xa8, 0x01, 0x03]); // flags = 3, unpacked
        body.extend([0xf8, 0x07, 0x05]); // field 127, unknown
        body.extend([0x20 | 2, 0x01, b'x']); // service again: the last wins
        let ours = SpanRef::decode(&body).unwrap().into_owned();
        assert_eq!(ours, Span::decode(&body[..]).unwrap());
        assert_eq!(ours.attributes["b"], "last");
        assert_eq!(ours.service, "x");
        assert_eq!(ours.flags.len(), 3);
    }

    #[test]
    fn bad_bodies_are_errors_like_prost_s() {
        let good = span().encode_to_vec();
        for cut in 0..good.len() {
            let body = &good[..cut];
            assert_eq!(
                SpanRef::decode(body).is_ok(),
                Span::decode(body).is_ok(),
                "cut at {cut}"
            );
        }
        // Not UTF-8, and a text field sent as a number.
        for bad in [&[0x22, 0x02, 0xc3, 0x28][..], &[0x20, 0x01]] {
            assert!(SpanRef::decode(bad).is_err());
            assert!(Span::decode(bad).is_err());
        }
    }

    #[test]
    fn a_borrowed_batch_holds_what_prost_decodes() {
        let batch = crate::Batch {
            version: 1,
            agent_id: "a".into(),
            instance: "i".into(),
            sequence: 9,
            spans: vec![span(), Span::default(), span()],
            aggregates: vec![crate::Aggregate {
                service: "checkout".into(),
                count: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = batch.encode_to_vec();
        let b = crate::Batch::decode_borrowed(&body).unwrap();
        let spans: Vec<Span> = b.spans.into_iter().map(SpanRef::into_owned).collect();
        assert_eq!(spans, batch.spans);
        assert_eq!(
            b.batch,
            crate::Batch {
                spans: vec![],
                ..batch.clone()
            }
        );
        // A span that is not UTF-8 is named; a cut body is refused, as prost refuses it.
        let mut bad = batch.clone();
        bad.spans[1].service = "ok".into();
        let mut body = bad.encode_to_vec();
        let at = body
            .windows(4)
            .position(|w| w == [0x22, 0x02, b'o', b'k'])
            .unwrap();
        body[at + 2] = 0xff;
        let e = crate::Batch::decode_borrowed(&body).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("spans[1]"));
        assert!(
            e.message.contains("service is not valid UTF-8"),
            "{}",
            e.message
        );
        let body = batch.encode_to_vec();
        for cut in [1, body.len() / 2, body.len() - 1] {
            assert!(crate::Batch::decode_borrowed(&body[..cut]).is_err());
        }
    }

    #[test]
    fn attributes_serialize_as_the_map_did() {
        let s = span();
        let mut ours = Vec::new();
        SpanRef::from(&s).write_attributes_json(&mut ours);
        assert_eq!(ours, serde_json::to_vec(&s.attributes).unwrap());
    }
}
