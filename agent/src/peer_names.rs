//! Peers by name. A span reports its peer as an address (`127.0.0.1:6379`); on-call thinks in
//! names. Before a span is counted or kept, its peer becomes `name (system, address)` —
//! `board-replica (postgresql, 127.0.0.1:6133)`, `pricing (http, 10.0.0.7:8001)` — so the
//! dependencies page, spans, traces, alerts, Slack and the API all say the same thing. The name
//! comes from, in order:
//!
//! 1. `[peer_names]` in agent.toml (`"host:port"` or `"host"` for any port = a name);
//! 2. the `[[database]]` entry whose `peers` (default: its URL's `host:port`) match;
//! 3. for an HTTP call, the service seen *answering* at that address: a server span received
//!    by this agent whose `server.address`/`server.port`, `net.host.name`/`net.host.port` or
//!    `http.host` is the address (a callee on the same host, or any host whose spans come
//!    through this agent). At most [`MAX_LEARNED`] addresses are remembered.
//!
//! A peer with no name stays as it was. The rename runs after the probe join, which matches
//! database spans to probed databases by address.

use std::collections::HashMap;

use stormwatch_model::limits::MAX_LABEL_BYTES;
use stormwatch_model::DependencyClass;

use crate::config::Config;
use crate::received::Received;

/// Addresses whose answering service is remembered; past it, no new one is learned.
pub const MAX_LEARNED: usize = 1_000;

/// The names this agent gives peers.
#[derive(Debug, Default)]
pub struct PeerNames {
    /// `[peer_names]`, keys lower-cased.
    configured: HashMap<String, String>,
    /// `[[database]]` peers → database name, keys lower-cased.
    databases: HashMap<String, String>,
    /// Address a service answered at → the service.
    learned: HashMap<String, String>,
}

/// Looks `address` up exactly, then by its host alone.
fn find<'a>(map: &'a HashMap<String, String>, address: &str) -> Option<&'a str> {
    if map.is_empty() {
        return None;
    }
    // Runs for every span with a peer: lower-case a copy only when there is something to lower.
    let address: std::borrow::Cow<'_, str> = if address.bytes().any(|b| b.is_ascii_uppercase()) {
        address.to_ascii_lowercase().into()
    } else {
        address.into()
    };
    map.get(address.as_ref())
        .or_else(|| {
            let host = address
                .rsplit_once(':')
                .map_or(address.as_ref(), |(h, _)| h);
            map.get(host)
        })
        .map(String::as_str)
}

impl PeerNames {
    pub fn new(cfg: &Config) -> Self {
        let mut names = PeerNames::default();
        names.reconfigure(cfg);
        names
    }

    /// Applies a reloaded config; what was learned stays.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.configured = cfg
            .peer_names
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        self.databases.clear();
        for d in &cfg.databases {
            for p in d.effective_peers() {
                self.databases
                    .entry(p.to_ascii_lowercase())
                    .or_insert_with(|| d.name.clone());
            }
        }
    }

    /// Learns the service answering at the address of a server span.
    pub fn observe(&mut self, span: &Received) {
        if span.dependency_class() != DependencyClass::HttpServer || span.service().is_empty() {
            return;
        }
        let Some(address) = listening_address(span) else {
            return;
        };
        if let Some(known) = self.learned.get_mut(&address) {
            if known != span.service() {
                span.service().clone_into(known);
            }
        } else if self.learned.len() < MAX_LEARNED {
            self.learned.insert(address, span.service().to_owned());
        }
    }

    /// The name of `address` for a span of `class`, if it has one.
    fn name_of(&self, class: DependencyClass, address: &str) -> Option<&str> {
        find(&self.configured, address)
            .or_else(|| find(&self.databases, address))
            .or_else(|| {
                (class == DependencyClass::HttpClient)
                    .then(|| find(&self.learned, address))
                    .flatten()
            })
    }

    /// Rewrites the span's peer as `name (system, address)` when the address has a name.
    pub fn rename(&self, span: &mut Received) {
        let peer = span.peer();
        if peer.is_empty() {
            return;
        }
        let class = span.dependency_class();
        let Some(name) = self.name_of(class, peer) else {
            return;
        };
        let system = match span.db_system() {
            "" => match class {
                DependencyClass::HttpClient => "http",
                other => other.as_str(),
            },
            s => s,
        };
        let mut named = stormwatch_model::peer::named(name, system, peer);
        if named.len() > MAX_LABEL_BYTES {
            // Too long to hold the address: the name alone, cut by the span itself.
            named.clear();
            named.push_str(name);
        }
        span.set_peer(&named);
    }
}

/// `host:port` a server span was received at, lower-cased, from the attributes that say it.
fn listening_address(span: &Received) -> Option<String> {
    let attr = |k: &str| span.attribute(k).filter(|v| !v.is_empty());
    let with_port = |host: &str, port: Option<&str>| -> String {
        let host = host.to_ascii_lowercase();
        match port {
            Some(p) if !host.contains(':') || host.starts_with('[') && host.ends_with(']') => {
                format!("{host}:{p}")
            }
            _ => host,
        }
    };
    if let Some(h) = attr("server.address") {
        return Some(with_port(h, attr("server.port")));
    }
    if let Some(h) = attr("net.host.name") {
        return Some(with_port(h, attr("net.host.port")));
    }
    attr("http.host").map(|h| h.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{classify, Incoming};
    use stormwatch_model::SpanKind;

    /// A span of `service` as classify makes it from these attributes.
    fn span(kind: SpanKind, service: &str, kv: &[(&str, &str)]) -> Received {
        let attrs: Vec<(String, String)> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let inc = Incoming {
            trace_id: &[1; 16],
            span_id: &[2; 8],
            parent_span_id: &[],
            name: "op",
            kind,
            start_ns: 1_750_000_000_000_000_000,
            end_ns: 1_750_000_000_005_000_000,
            error: false,
            status_message: "",
            service,
            instance: "web-1",
        };
        classify(&inc, attrs.as_slice(), &Default::default(), 65536).unwrap()
    }

    fn client(kv: &[(&str, &str)]) -> Received {
        span(SpanKind::Client, "shop", kv)
    }

    fn config(toml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, toml).unwrap();
        crate::config::load(Some(&p), &Default::default()).unwrap()
    }

    #[test]
    fn peers_are_named_by_config_by_database_and_by_the_service_answering() {
        let cfg = config(
            "[peer_names]\n\"127.0.0.1:6379\" = \"cache\"\n\"partner.internal\" = \"partner\"\n\
             [[database]]\nname = \"shop-replica\"\nengine = \"mysql\"\nrole = \"replica\"\n\
             url = \"mysql://u@127.0.0.1:3307/\"\n",
        );
        let names = PeerNames::new(&cfg);
        let named = |attrs: &[(&str, &str)]| {
            let mut s = client(attrs);
            names.rename(&mut s);
            s.peer().to_owned()
        };
        assert_eq!(
            named(&[
                ("db.system", "redis"),
                ("net.peer.name", "127.0.0.1"),
                ("net.peer.port", "6379")
            ],),
            "cache (redis, 127.0.0.1:6379)"
        );
        assert_eq!(
            named(&[
                ("db.system", "mysql"),
                ("server.address", "127.0.0.1"),
                ("server.port", "3307")
            ],),
            "shop-replica (mysql, 127.0.0.1:3307)"
        );
        // A host configured without its port names every port.
        assert_eq!(
            named(&[
                ("http.request.method", "GET"),
                ("url.full", "https://partner.internal:8443/x")
            ],),
            "partner (http, partner.internal:8443)"
        );
        // Unknown: left as it was.
        assert_eq!(
            named(&[
                ("db.system", "redis"),
                ("net.peer.name", "10.9.9.9"),
                ("net.peer.port", "6379")
            ],),
            "10.9.9.9:6379"
        );
    }

    #[test]
    fn an_http_callee_is_named_by_the_service_seen_answering_there() {
        let mut names = PeerNames::new(&config(""));
        let call = [
            ("http.method", "GET"),
            ("http.url", "http://127.0.0.1:38859/prices?category=books"),
        ];
        let mut before = client(&call);
        names.rename(&mut before);
        assert_eq!(before.peer(), "127.0.0.1:38859", "not seen answering yet");
        // What the stock Flask instrumentation sends on the callee's server span.
        let server = span(
            SpanKind::Server,
            "pricing",
            &[
                ("http.method", "GET"),
                ("http.route", "/prices"),
                ("net.host.name", "127.0.0.1:38859"),
                ("net.host.port", "38859"),
                ("http.host", "127.0.0.1:38859"),
            ],
        );
        assert_eq!(server.dependency_class(), DependencyClass::HttpServer);
        names.observe(&server);
        let mut after = client(&call);
        names.rename(&mut after);
        assert_eq!(after.peer(), "pricing (http, 127.0.0.1:38859)");
        // Only HTTP calls take a learned name: a database at that address does not.
        let mut db = client(&[
            ("db.system", "postgresql"),
            ("net.peer.name", "127.0.0.1"),
            ("net.peer.port", "38859"),
        ]);
        names.rename(&mut db);
        assert_eq!(db.peer(), "127.0.0.1:38859");
        // The new conventions' server.address/server.port are read too.
        let server = span(
            SpanKind::Server,
            "inventory",
            &[
                ("http.request.method", "GET"),
                ("http.route", "/x"),
                ("server.address", "Inventory.Local"),
                ("server.port", "9000"),
            ],
        );
        names.observe(&server);
        let mut call = client(&[
            ("http.request.method", "GET"),
            ("url.full", "http://inventory.local:9000/stock"),
        ]);
        names.rename(&mut call);
        assert_eq!(call.peer(), "inventory (http, inventory.local:9000)");
    }
}
