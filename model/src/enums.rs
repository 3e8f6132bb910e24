//! Closed vocabularies of the wire model.
//!
//! On the protobuf wire they are `int32` enums; in JSON they are lower-case names
//! (`"redis"`, `"replica"`), which is what people type into query strings and configs.

use serde::{Deserialize, Deserializer, Serializer};

/// Shared behaviour of every wire enum: its stable lower-case name.
pub trait WireEnum: Sized + Copy + 'static {
    /// Every variant, in wire order.
    const ALL: &'static [Self];
    /// The stable name used in JSON, SQL and URLs.
    fn as_str(self) -> &'static str;
    /// The inverse of [`WireEnum::as_str`].
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == name)
    }
    /// The protobuf number of this variant.
    fn number(self) -> i32;
    /// The variant with this protobuf number.
    fn from_number(n: i32) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.number() == n)
    }
    /// Names of all variants, for error messages.
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $num:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $num),+
        }
        impl WireEnum for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            fn number(self) -> i32 {
                self as i32
            }
        }
        impl $name {
            /// The stable lower-case name.
            pub fn as_str(self) -> &'static str {
                WireEnum::as_str(self)
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(WireEnum::as_str(*self))
            }
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$name as WireEnum>::from_name(s).ok_or_else(|| {
                    format!("unknown {} `{}`, expected one of: {}", stringify!($name), s, <$name as WireEnum>::names())
                })
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(WireEnum::as_str(*self))
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

wire_enum! {
    /// OpenTelemetry's span kind.
    SpanKind {
        Unspecified = 0 => "unspecified",
        Internal = 1 => "internal",
        Server = 2 => "server",
        Client = 3 => "client",
        Producer = 4 => "producer",
        Consumer = 5 => "consumer",
    }
}

wire_enum! {
    /// What a span waited on: the axis of the "latency by dependency" view.
    DependencyClass {
        Internal = 0 => "internal",
        HttpServer = 1 => "http_server",
        Db = 2 => "db",
        Redis = 3 => "redis",
        HttpClient = 4 => "http_client",
        Messaging = 5 => "messaging",
    }
}

wire_enum! {
    /// What a metric series measures, which decides how its points merge and read.
    MetricKind {
        Unspecified = 0 => "unspecified",
        /// A sampled value (`process.cpu.utilization`): read as the mean of the samples,
        /// with min, max and last.
        Gauge = 1 => "gauge",
        /// A monotonic sum (`http.server.requests`): read as its increase.
        Counter = 2 => "counter",
        /// A non-monotonic sum (`http.server.active_requests`, `db.client.connections.usage`):
        /// read as its value, with min and max over the minute.
        UpDown = 3 => "updown",
        /// A histogram (explicit or exponential buckets): count, sum, mean and quantiles.
        Histogram = 4 => "histogram",
    }
}

wire_enum! {
    /// Outcome of a span.
    SpanStatus {
        Ok = 0 => "ok",
        Error = 1 => "error",
    }
}

wire_enum! {
    /// Which side of a replicated database a span or probe talked to.
    DbRole {
        Unknown = 0 => "unknown",
        Primary = 1 => "primary",
        Replica = 2 => "replica",
    }
}

wire_enum! {
    /// Why the agent's sampler kept a span.
    KeepReason {
        Sampled = 0 => "sampled",
        Slow = 1 => "slow",
        Error = 2 => "error",
        Forced = 3 => "forced",
    }
}

wire_enum! {
    /// Flags the agent attaches to a span so the dashboard can say *why* it matters.
    SpanFlag {
        Slow = 0 => "slow",
        Error = 1 => "error",
        FullScanSuspect = 2 => "full_scan_suspect",
        ReplicaLag = 3 => "replica_lag",
        ConnectFailure = 4 => "connect_failure",
    }
}

wire_enum! {
    /// Why a database probe failed.
    FailureClass {
        None = 0 => "none",
        Refused = 1 => "refused",
        Timeout = 2 => "timeout",
        Authentication = 3 => "authentication",
        TooManyConnections = 4 => "too_many_connections",
        Other = 5 => "other",
        /// Connected, but the probe user may not read what the probe needs (replication
        /// status, the URL's database): lag goes unwatched until it is granted.
        Permission = 6 => "permission",
        /// The TLS handshake failed: a certificate not signed by the trusted CA or not for the
        /// host, a server without TLS where the probe requires it, or a server that requires
        /// TLS where the probe has it off.
        Tls = 7 => "tls",
    }
}

/// serde helpers for `i32` fields that hold a wire enum (prost's representation).
pub mod as_name {
    use super::*;

    /// Serializes the enum's name; an unknown number is written as the number.
    pub fn serialize<E: WireEnum, S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        match E::from_number(*v) {
            Some(e) => s.serialize_str(e.as_str()),
            None => s.serialize_i32(*v),
        }
    }

    /// Accepts the enum's name (the documented JSON form) or its number.
    pub fn deserialize<'de, E: WireEnum, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NameOrNumber<'a> {
            Name(std::borrow::Cow<'a, str>),
            Number(i32),
        }
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Name(n) => E::from_name(&n).map(|e| e.number()).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown value `{n}`, expected one of: {}",
                    E::names()
                ))
            }),
            NameOrNumber::Number(n) => Ok(n),
        }
    }

    /// For `repeated` enum fields.
    pub fn serialize_vec<E: WireEnum, S: Serializer>(v: &[i32], s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for n in v {
            match E::from_number(*n) {
                Some(e) => seq.serialize_element(e.as_str())?,
                None => seq.serialize_element(n)?,
            }
        }
        seq.end()
    }

    /// For `repeated` enum fields.
    pub fn deserialize_vec<'de, E: WireEnum, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<i32>, D::Error> {
        let names = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        names
            .iter()
            .map(|n| {
                E::from_name(n).map(|e| e.number()).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown value `{n}`, expected one of: {}",
                        E::names()
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in DependencyClass::ALL {
            assert_eq!(c.as_str().parse::<DependencyClass>().unwrap(), *c);
        }
        assert_eq!(
            DependencyClass::from_number(3),
            Some(DependencyClass::Redis)
        );
        let err = "mongo".parse::<DependencyClass>().unwrap_err();
        assert!(err.contains("http_client"), "{err}");
    }
}
