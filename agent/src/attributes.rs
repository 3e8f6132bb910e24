//! Span attributes as the receivers hand them to the classifier: [`Value`] (borrowed from the
//! request) and the [`Attributes`] of one span, whatever the protocol's own form.

/// An attribute value as the receivers hand it over, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Arrays, maps, bytes: not used for classification, shipped as a short marker.
    Other,
}

impl Value<'_> {
    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            // Ports and counts sent as text (Zipkin tags always are): plain digits directly.
            Value::Str(s)
                if (1..=18).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit()) =>
            {
                Some(s.bytes().fold(0, |n, c| n * 10 + i64::from(c - b'0')))
            }
            Value::Str(s) => s.trim().parse().ok(),
            Value::Double(d) if d.fract() == 0.0 => Some(*d as i64),
            _ => None,
        }
    }
    pub(crate) fn len(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            _ => 0,
        }
    }
}

/// The attributes of one span (span attributes only; resource attributes go in
/// [`crate::classify::Incoming`]).
pub trait Attributes {
    fn get(&self, key: &str) -> Option<Value<'_>>;
    fn each(&self, f: &mut dyn FnMut(&str, Value<'_>));
    /// The value of the `i`th attribute (in [`Attributes::each`] order).
    fn nth(&self, i: usize) -> Option<Value<'_>>;
}

/// Borrowed attributes from the zero-copy OTLP reader.
impl Attributes for [(&str, Value<'_>)] {
    fn get(&self, key: &str) -> Option<Value<'_>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
    fn each(&self, f: &mut dyn FnMut(&str, Value<'_>)) {
        for (k, v) in self {
            f(k, *v);
        }
    }
    fn nth(&self, i: usize) -> Option<Value<'_>> {
        self.get(i).map(|(_, v)| *v)
    }
}

/// Zipkin tags, and tests.
impl Attributes for [(String, String)] {
    fn get(&self, key: &str) -> Option<Value<'_>> {
        self.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| Value::Str(v))
    }
    fn each(&self, f: &mut dyn FnMut(&str, Value<'_>)) {
        for (k, v) in self {
            f(k, Value::Str(v));
        }
    }
    fn nth(&self, i: usize) -> Option<Value<'_>> {
        self.get(i).map(|(_, v)| Value::Str(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_sent_as_text_read_as_parsing_them_would() {
        for text in [
            "0",
            "5432",
            "007",
            "999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            " 42 ",
            "-1",
            "+7",
            "4a",
            "",
            "١٢",
        ] {
            assert_eq!(
                Value::Str(text).as_int(),
                text.trim().parse().ok(),
                "{text:?}"
            );
        }
    }
}
