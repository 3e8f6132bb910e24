//! Trace and span ids as lower-case hex in JSON (as OTLP/JSON and Zipkin write them).

use serde::{Deserialize, Deserializer, Serializer};

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Bytes from hex (either case). `None` for odd length or a non-hex digit.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let raw = text.as_bytes();
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    raw.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// serde `with` module for `Vec<u8>` ids.
pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(v))
}

/// serde `with` module for `Vec<u8>` ids.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = std::borrow::Cow::<str>::deserialize(d)?;
    decode(&text).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not hex")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let id = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::encode(&id), "0001abff");
        assert_eq!(super::decode("0001ABff").unwrap(), id);
        assert!(super::decode("abc").is_none());
        assert!(super::decode("zz").is_none());
    }
}
