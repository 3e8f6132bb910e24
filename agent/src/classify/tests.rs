use stormwatch_model::Span;

use super::keys::{known, KNOWN_KEYS};
use super::*;

pub(crate) const NOW: u64 = 1_750_000_000_000_000_000;

#[test]
fn the_key_index_answers_as_a_search_of_the_attributes_would() {
    // Known keys map to their slot, unknown keys to none.
    assert_eq!(known("db.system.name"), Some(K::DbSystemName));
    assert_eq!(known("net.sock.peer.port"), Some(K::NetSockPeerPort));
    assert_eq!(known("db.systemx"), None);
    assert_eq!(known(""), None);
    // Duplicates, empty values, numbers and unknown keys, in many orders: the first
    // attribute of a key is its value, and `first_str` passes over empty and non-string
    // values to the next key, as searching the list did.
    let pool: [(&str, Value<'_>); 8] = [
        ("db.system.name", Value::Str("")),
        ("db.system", Value::Str("postgresql")),
        ("db.system.name", Value::Str("mysql")),
        ("db.system", Value::Int(3)),
        ("server.port", Value::Str("5432")),
        ("server.port", Value::Int(6379)),
        ("other", Value::Str("x")),
        ("db.system.name", Value::Str("redis")),
    ];
    let search_str = |a: &[(&str, Value<'_>)], keys: &[&str]| {
        keys.iter()
            .find_map(|k| match a.iter().find(|(n, _)| n == k) {
                Some((_, Value::Str(s))) if !s.is_empty() => Some(s.to_string()),
                _ => None,
            })
    };
    let mut seed = 7u64;
    for _ in 0..2000 {
        let attrs: Vec<(&str, Value<'_>)> = (0..seed % 6)
            .map(|i| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                pool[((seed >> 33) as usize + i as usize) % pool.len()]
            })
            .collect();
        let mut at = [0u16; KNOWN_KEYS];
        for (i, (k, _)) in attrs.iter().enumerate() {
            if let Some(k) = known(k) {
                if at[k as usize] == 0 {
                    at[k as usize] = i as u16 + 1;
                }
            }
        }
        let idx = Indexed {
            attrs: attrs.as_slice(),
            at,
        };
        assert_eq!(
            idx.first_str(&[K::DbSystemName, K::DbSystem])
                .map(str::to_string),
            search_str(&attrs, &["db.system.name", "db.system"]),
            "{attrs:?}"
        );
        let port = attrs
            .iter()
            .find(|(k, _)| *k == "server.port")
            .map(|(_, v)| *v);
        assert_eq!(idx.first(&[K::ServerPort]), port, "{attrs:?}");
        assert_eq!(idx.has(K::ServerPort), port.is_some());
    }
}

fn inc<'a>(kind: SpanKind, name: &'a str) -> Incoming<'a> {
    Incoming {
        trace_id: &[1; 16],
        span_id: &[2; 8],
        parent_span_id: &[],
        name,
        kind,
        start_ns: NOW,
        end_ns: NOW + 5_000_000,
        error: false,
        status_message: "",
        service: "shop",
        instance: "web-1",
    }
}

fn attrs(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn run(kind: SpanKind, name: &str, kv: &[(&str, &str)]) -> Span {
    classify(
        &inc(kind, name),
        attrs(kv).as_slice(),
        &Classify::default(),
        65536,
    )
    .unwrap()
    .into_span()
}

#[test]
fn nul_characters_become_replacement_characters_within_each_limit() {
    let long_service = format!("{}\0", "s".repeat(MAX_LABEL_BYTES - 1));
    let mut i = inc(SpanKind::Server, "GET /a\0b");
    i.service = &long_service;
    i.error = true;
    i.status_message = "boom\0";
    let r = classify(
        &i,
        attrs(&[("http.route", "/a"), ("k\0ey", "v\0\0al"), ("ok", "fine")]).as_slice(),
        &Classify::default(),
        65536,
    )
    .unwrap();
    // Service, operation (the span's name), message, attribute key, value (two).
    assert_eq!(r.replaced_nuls, 6);
    let s = r.into_span();
    let all = [&s.service, &s.operation, &s.status_message]
        .into_iter()
        .chain(s.attributes.keys())
        .chain(s.attributes.values());
    for text in all {
        assert!(!text.contains('\0'), "{text:?} still holds a NUL");
    }
    // The service was exactly at its limit; the replacement must not push it over.
    assert!(s.service.len() <= MAX_LABEL_BYTES, "{}", s.service.len());
    assert!(s.service.starts_with("sss"), "{}", s.service);
    assert_eq!(s.status_message, "boom\u{FFFD}");
    assert_eq!(
        s.attributes.get("k\u{FFFD}ey").map(String::as_str),
        Some("v\u{FFFD}\u{FFFD}al")
    );
    assert_eq!(s.attributes.get("ok").map(String::as_str), Some("fine"));
    // A span without NUL is untouched and not counted.
    let clean = classify(
        &inc(SpanKind::Server, "GET /"),
        attrs(&[]).as_slice(),
        &Classify::default(),
        65536,
    )
    .unwrap();
    assert_eq!(clean.replaced_nuls, 0);
}

#[test]
fn old_and_new_db_conventions_agree() {
    let old = run(
        SpanKind::Client,
        "query",
        &[
            ("db.system", "postgresql"),
            ("db.statement", "SELECT * FROM users WHERE id = 7"),
            ("net.peer.name", "db1"),
            ("net.peer.port", "5433"),
        ],
    );
    let new = run(
        SpanKind::Client,
        "query",
        &[
            ("db.system.name", "postgresql"),
            ("db.query.text", "SELECT * FROM users WHERE id = 7"),
            ("server.address", "db1"),
            ("server.port", "5433"),
        ],
    );
    for s in [&old, &new] {
        assert_eq!(s.class, DependencyClass::Db as i32);
        assert_eq!(s.peer, "db1:5433");
        assert_eq!(s.operation, "SELECT users");
        assert_eq!(s.statement, "SELECT * FROM users WHERE id = ?");
        assert_eq!(s.db_system, "postgresql");
        // The raw statement is not smuggled out through the attributes.
        assert!(
            s.attributes.values().all(|v| !v.contains("id = 7")),
            "{:?}",
            s.attributes
        );
    }
}

#[test]
fn redis_is_its_own_class_and_keeps_no_values() {
    let s = run(
        SpanKind::Client,
        "SET",
        &[
            ("db.system", "redis"),
            ("db.statement", "SET token:991 s3cr3t"),
            ("server.address", "cache"),
        ],
    );
    assert_eq!(s.class, DependencyClass::Redis as i32);
    assert_eq!(s.operation, "SET");
    assert_eq!(s.statement, "SET token:?");
    assert_eq!(s.peer, "cache:6379");
    let encoded = format!("{s:?}");
    assert!(!encoded.contains("s3cr3t"), "{encoded}");
}

#[test]
fn raw_statements_only_when_configured() {
    let cfg = Classify {
        keep_raw_statements: true,
        ..Classify::default()
    };
    let kv = attrs(&[
        ("db.system", "mysql"),
        ("db.statement", "SELECT 1 FROM t WHERE a = 'x'"),
    ]);
    let s = classify(&inc(SpanKind::Client, "q"), kv.as_slice(), &cfg, 65536).unwrap();
    assert_eq!(s.statement(), "SELECT 1 FROM t WHERE a = 'x'");
}

#[test]
fn http_server_and_client() {
    let s = run(
        SpanKind::Server,
        "GET",
        &[
            ("http.request.method", "GET"),
            ("http.route", "/posts/{id}"),
            ("http.response.status_code", "503"),
        ],
    );
    assert_eq!(s.class, DependencyClass::HttpServer as i32);
    assert_eq!(s.operation, "GET /posts/{id}");
    assert_eq!(s.http_status, 503);
    assert!(s.is_error());
    // A server's peer attributes name its client and that client's ephemeral port (what
    // the stock Python WSGI instrumentation sends): no peer, so no aggregate row per port.
    for port in ["51234", "51235"] {
        let s = run(
            SpanKind::Server,
            "GET",
            &[
                ("http.method", "GET"),
                ("http.route", "/posts"),
                ("net.peer.ip", "10.0.0.7"),
                ("net.peer.port", port),
                ("server.address", "board.local"),
            ],
        );
        assert_eq!(s.peer, "", "{port}");
    }
    let c = run(
        SpanKind::Client,
        "GET",
        &[
            ("http.method", "GET"),
            ("http.url", "https://api.example.com/v1/x?key=SECRET"),
            ("http.status_code", "404"),
        ],
    );
    assert_eq!(c.class, DependencyClass::HttpClient as i32);
    assert_eq!(c.peer, "api.example.com:443");
    assert!(c.is_error());
    assert_eq!(c.attributes["http.url"], "https://api.example.com/v1/x");
}

#[test]
fn messaging_and_internal() {
    assert_eq!(
        run(
            SpanKind::Producer,
            "orders publish",
            &[("messaging.system", "kafka")]
        )
        .class,
        DependencyClass::Messaging as i32
    );
    assert_eq!(
        run(SpanKind::Internal, "render", &[]).class,
        DependencyClass::Internal as i32
    );
}

#[test]
fn db_role_from_config_or_attribute() {
    let mut cfg = Classify::default();
    cfg.db_roles.insert("db2:5432".into(), DbRole::Replica);
    cfg.db_roles.insert("db3".into(), DbRole::Primary);
    let go = |kv: &[(&str, &str)]| {
        classify(
            &inc(SpanKind::Client, "q"),
            attrs(kv).as_slice(),
            &cfg,
            65536,
        )
        .unwrap()
        .db_role
    };
    assert_eq!(
        go(&[("db.system", "postgresql"), ("server.address", "db2")]),
        DbRole::Replica as i32
    );
    assert_eq!(
        go(&[
            ("db.system", "postgresql"),
            ("server.address", "db3"),
            ("server.port", "6000")
        ]),
        DbRole::Primary as i32
    );
    assert_eq!(
        go(&[
            ("db.system", "postgresql"),
            ("server.address", "db9"),
            ("db.role", "replica")
        ]),
        DbRole::Replica as i32
    );
    assert_eq!(
        go(&[("db.system", "postgresql"), ("server.address", "db9")]),
        DbRole::Unknown as i32
    );
}

#[test]
fn bad_ids_and_times_are_rejected_with_reasons() {
    let kv = attrs(&[]);
    let cfg = Classify::default();
    let mut i = inc(SpanKind::Server, "x");
    i.trace_id = &[0; 16];
    assert!(classify(&i, kv.as_slice(), &cfg, 100)
        .unwrap_err()
        .contains("all zeros"));
    let mut i = inc(SpanKind::Server, "x");
    i.span_id = &[1; 4];
    assert!(classify(&i, kv.as_slice(), &cfg, 100)
        .unwrap_err()
        .contains("spanId must be 8 bytes"));
    let mut i = inc(SpanKind::Server, "x");
    i.start_ns = 5;
    i.end_ns = 6;
    assert!(classify(&i, kv.as_slice(), &cfg, 100)
        .unwrap_err()
        .contains("before 2000"));
    let mut i = inc(SpanKind::Server, "x");
    i.end_ns = i.start_ns - 1;
    assert!(classify(&i, kv.as_slice(), &cfg, 100)
        .unwrap_err()
        .contains("before startTime"));
    let big = attrs(&[("blob", &"x".repeat(200))]);
    assert!(
        classify(&inc(SpanKind::Server, "x"), big.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("blob")
    );
}
