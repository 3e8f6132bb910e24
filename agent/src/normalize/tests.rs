use super::*;

/// The normalizer as it was before it was split into a tokenizer, kept as the oracle the
/// tokenizer-based one must agree with byte for byte.
mod before_tokenizer {
    use super::super::{collapse_lists, find, prev_is_ident, push_token, upper};

    /// The list `no_key` matches, as the old normalizer had it.
    pub const NO_KEY: &[&str] = &[
        "ACL",
        "AUTH",
        "BGSAVE",
        "CLIENT",
        "CLUSTER",
        "COMMAND",
        "CONFIG",
        "DBSIZE",
        "DISCARD",
        "ECHO",
        "EVAL",
        "EVALSHA",
        "EVALSHA_RO",
        "EVAL_RO",
        "EXEC",
        "FCALL",
        "FLUSHALL",
        "FLUSHDB",
        "FUNCTION",
        "HELLO",
        "INFO",
        "KEYS",
        "LASTSAVE",
        "LATENCY",
        "MEMORY",
        "MIGRATE",
        "MONITOR",
        "MULTI",
        "PING",
        "PSUBSCRIBE",
        "PUBLISH",
        "QUIT",
        "RESET",
        "SAVE",
        "SCAN",
        "SCRIPT",
        "SELECT",
        "SHUTDOWN",
        "SLOWLOG",
        "SUBSCRIBE",
        "SWAPDB",
        "TIME",
        "UNSUBSCRIBE",
        "WAIT",
    ];

    pub fn sql(raw: &str) -> String {
        let b = raw.as_bytes();
        let mut out = String::with_capacity(raw.len().min(4096));
        let mut i = 0;
        // Whether the previous significant token lets a following `-` be a sign.
        let mut sign_ok = true;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            // Comments.
            if c == b'-' && b.get(i + 1) == Some(&b'-') || c == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            if c == b'/' && b.get(i + 1) == Some(&b'*') {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                continue;
            }
            // String literals: '...' with '' or \' escapes; E'..', N'..', B'..', X'..' prefixes.
            let prefixed = matches!(c, b'e' | b'E' | b'n' | b'N' | b'b' | b'B' | b'x' | b'X')
                && b.get(i + 1) == Some(&b'\'')
                && !prev_is_ident(b, i);
            if c == b'\'' || prefixed {
                i += if prefixed { 2 } else { 1 };
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                push_token(&mut out, "?");
                sign_ok = false;
                continue;
            }
            // Dollar quoting ($$...$$, $tag$...$tag$) and $1 placeholders.
            if c == b'$' {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if b.get(j) == Some(&b'$') && !b[i + 1..j].first().is_some_and(u8::is_ascii_digit) {
                    let tag = &b[i..=j];
                    let body_start = j + 1;
                    let end = find(b, body_start, tag).map_or(b.len(), |p| p + tag.len());
                    i = end;
                } else {
                    i = j.max(i + 1);
                }
                push_token(&mut out, "?");
                sign_ok = false;
                continue;
            }
            // Named placeholders `:name` (not `::type` casts).
            if c == b':'
                && b.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic())
                && (i == 0 || b[i - 1] != b':')
            {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                push_token(&mut out, "?");
                i = j;
                sign_ok = false;
                continue;
            }
            // Numbers (and a sign in front of one), hex 0x...
            let signed = c == b'-'
                && sign_ok
                && b.get(i + 1)
                    .is_some_and(|d| d.is_ascii_digit() || *d == b'.');
            if c.is_ascii_digit()
                || signed
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
            {
                let mut j = if signed { i + 1 } else { i };
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || b[j] == b'.'
                        || ((b[j] == b'+' || b[j] == b'-') && matches!(b[j - 1], b'e' | b'E')))
                {
                    j += 1;
                }
                push_token(&mut out, "?");
                i = j;
                sign_ok = false;
                continue;
            }
            // Quoted identifiers: kept verbatim.
            if c == b'"' || c == b'`' || c == b'[' {
                let close = if c == b'[' { b']' } else { c };
                let mut j = i + 1;
                while j < b.len() && b[j] != close {
                    j += 1;
                }
                j = (j + 1).min(b.len());
                push_token(&mut out, &String::from_utf8_lossy(&b[i..j]));
                i = j;
                sign_ok = false;
                continue;
            }
            // Identifiers and keywords.
            if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
                let mut j = i;
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || b[j] == b'_'
                        || b[j] == b'.'
                        || b[j] >= 0x80)
                {
                    j += 1;
                }
                let word = String::from_utf8_lossy(&b[i..j]);
                push_token(&mut out, &word);
                i = j;
                // After a keyword like WHERE/AND/=/THEN a `-` is a sign; after an identifier it is
                // subtraction. Keywords are not known here, so only common ones are listed.
                sign_ok = matches!(
                    upper(&word, &mut [0; 16]),
                    "WHERE"
                        | "AND"
                        | "OR"
                        | "NOT"
                        | "THEN"
                        | "ELSE"
                        | "WHEN"
                        | "SELECT"
                        | "VALUES"
                        | "SET"
                        | "LIMIT"
                        | "OFFSET"
                        | "BETWEEN"
                        | "IN"
                        | "RETURN"
                        | "BY"
                        | "LIKE"
                        | "IS"
                );
                continue;
            }
            // Operators and punctuation.
            let mut tok = [0u8; 4];
            let s = (c as char).encode_utf8(&mut tok);
            push_token(&mut out, s);
            sign_ok = !matches!(c, b')');
            i += 1;
            if out.len() > 64 * 1024 {
                break;
            }
        }
        collapse_lists(&out)
    }

    pub fn redis(raw: &str) -> (String, String) {
        let mut words = raw.split_ascii_whitespace();
        let command = words.next().unwrap_or("").to_ascii_uppercase();
        let command: String = command
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(32)
            .collect();
        if command.is_empty() {
            return ("UNKNOWN".into(), "UNKNOWN".into());
        }
        if NO_KEY.contains(&command.as_str()) {
            return (command.clone(), command);
        }
        match words.next() {
            Some(key) => {
                let pattern = key_pattern(key.trim_matches(|c| c == '"' || c == '\''));
                let statement = format!("{command} {pattern}");
                (command, statement)
            }
            None => (command.clone(), command),
        }
    }
    pub fn key_pattern(key: &str) -> String {
        let mut out = String::with_capacity(key.len().min(256));
        let mut seg = String::new();
        let flush = |seg: &mut String, out: &mut String| {
            let variable =
                seg.chars().any(|c| c.is_ascii_digit()) || seg.len() >= 24 || !seg.is_ascii();
            out.push_str(if variable { "?" } else { seg });
            seg.clear();
        };
        for c in key.chars() {
            if matches!(
                c,
                ':' | '.' | '/' | '|' | '-' | '_' | '#' | '{' | '}' | '=' | ','
            ) {
                flush(&mut seg, &mut out);
                out.push(c);
            } else {
                seg.push(c);
            }
            if out.len() > 200 {
                break;
            }
        }
        flush(&mut seg, &mut out);
        out
    }
}

/// Statements made of the pieces the scanner distinguishes, in random order.
fn random_statements(n: usize) -> Vec<String> {
    const PIECES: &[&str] = &[
        "SELECT",
        "select",
        "a",
        "t.b",
        "_x",
        "é",
        "FROM",
        "WHERE",
        "AND",
        "IN",
        "VALUES",
        "INSERT",
        "INTO",
        "UPDATE",
        "SET",
        "THEN",
        "count",
        "(",
        ")",
        ",",
        ";",
        ".",
        ":",
        "::",
        "=",
        "<",
        "-",
        "+",
        "*",
        "/",
        "1",
        "-2",
        "3.5",
        ".5",
        "1e-3",
        "0xFF",
        "'s'",
        "'it''s'",
        "E'a\\'b'",
        "'",
        "$1",
        "$$x$$",
        "$t$ y $t$",
        "$",
        ":name",
        "\"Q\"",
        "`b`",
        "[c]",
        "\"",
        "--c\n",
        "#c\n",
        "/* c */",
        "/*",
        " ",
        "\n",
        "\t",
        "",
        "N'x'",
        "x'",
        "\\",
        "\u{0}",
        "ß",
        "LIMIT",
        "BY",
        "IS",
        "(?)",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = next() % 24;
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
                if next() % 3 == 0 {
                    s.push(' ');
                }
            }
            s
        })
        .collect()
}

#[test]
fn tokenizer_normalizes_exactly_as_before() {
    let mut all = random_statements(20_000);
    all.extend(
        [
            "SELECT * FROM users WHERE email = 'bob@example.com' AND id = 42",
            "select a from t where x = -3.5e-2 and y = 'it''s'",
            "UPDATE t SET n = n - 1 WHERE k = E'a\\'b'",
            "SELECT  a,\n\tb -- who\nFROM /* hint */ t\n WHERE count(x) > 10",
            "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')",
            "x-1",
            "WHERE-1",
            "a - -1",
            "\u{0}\u{ff}é'x",
        ]
        .map(String::from),
    );
    for s in &all {
        assert_eq!(sql(s), before_tokenizer::sql(s), "{s:?}");
    }
}

#[test]
fn redis_normalizes_exactly_as_before() {
    for s in random_statements(5_000) {
        for cmd in [
            "GET ",
            "hset ",
            "AUTH ",
            "",
            "sét ",
            "\"GET\" ",
            " \tGET\n ",
        ] {
            let s = format!("{cmd}{}", s.replace(' ', ":"));
            assert_eq!(redis(&s), before_tokenizer::redis(&s), "{s:?}");
            assert_eq!(key_pattern(&s), before_tokenizer::key_pattern(&s), "{s:?}");
        }
        // Whitespace as the statement has it: between words, runs of it, at the ends.
        assert_eq!(redis(&s), before_tokenizer::redis(&s), "{s:?}");
    }
    for name in before_tokenizer::NO_KEY {
        let s = format!("{} secret:1", name.to_lowercase());
        assert_eq!(redis(&s), before_tokenizer::redis(&s), "{s:?}");
        assert_eq!(redis(&s).1, *name);
    }
    for s in [
        "",
        " ",
        "\t\n",
        "  set  k  v ",
        "GET\u{a0}k",
        "PING\tx",
        "get\x0bk v",
    ] {
        assert_eq!(redis(s), before_tokenizer::redis(s), "{s:?}");
    }
    let long = "k:".repeat(300) + "end";
    assert_eq!(key_pattern(&long), before_tokenizer::key_pattern(&long));
    let long = format!("GET {}", "ab:".repeat(150));
    assert_eq!(redis(&long), before_tokenizer::redis(&long));
}

#[test]
fn equal_fingerprints_mean_equal_normalized_text() {
    let all = random_statements(20_000);
    let mut seen = std::collections::HashMap::new();
    for s in &all {
        let n = sql(s);
        if let Some(prev) = seen.insert(sql_fingerprint(s), n.clone()) {
            assert_eq!(prev, n, "{s:?}");
        }
    }
    // Literals do not change the fingerprint; anything else does.
    let f = sql_fingerprint;
    assert_eq!(
        f("SELECT a FROM t WHERE id = 1 AND s IN ('x', 'y')"),
        f("SELECT a\n FROM t WHERE id = 99 AND s IN ('z', 'w')")
    );
    for other in [
        "SELECT b FROM t WHERE id = 1 AND s IN ('x', 'y')",
        "SELECT a FROM t WHERE id = 1 AND s IN ('x')",
        "SELECT a FROM t WHERE id = 1 OR s IN ('x', 'y')",
        "SELECT a FROM \"t\" WHERE id = 1 AND s IN ('x', 'y')",
    ] {
        assert_ne!(
            f("SELECT a FROM t WHERE id = 1 AND s IN ('x', 'y')"),
            f(other)
        );
    }
}

#[test]
fn cached_normalization_is_normalization() {
    for s in random_statements(5_000)
        .iter()
        .chain(random_statements(5_000).iter())
    {
        let n = sql_cached(s);
        assert_eq!(n.statement, sql(s), "{s:?}");
        assert_eq!(n.operation, sql_operation(&n.statement), "{s:?}");
        assert_eq!(n.missing_where, is_full_scan_suspect(&n.statement, true));
    }
    SQL_CACHE.with(|c| assert!(c.borrow().len() <= SQL_CACHE_ENTRIES));
}

#[test]
fn repeated_raw_statements_skip_the_fingerprint_and_literals_never_enter_that_cache() {
    let raw_entries = || RAW_CACHE.with(|c| c.borrow().len());
    // Literals differ every time: the raw cache stays empty.
    for i in 0..100 {
        let n = sql_cached(&format!("SELECT * FROM t WHERE id = {i}"));
        assert_eq!(n.statement, "SELECT * FROM t WHERE id = ?");
    }
    assert_eq!(raw_entries(), 0);
    // A parameterized statement: the second sighting in a row enters it, and later ones
    // are found there, with the same answer.
    let q = "SELECT * FROM posts WHERE class_id = $1 ORDER BY id DESC LIMIT $2";
    let first = sql_cached(q);
    assert_eq!(raw_entries(), 0);
    let second = sql_cached(q);
    assert_eq!(raw_entries(), 1);
    let third = sql_cached(q);
    assert!(std::rc::Rc::ptr_eq(&first, &second) && std::rc::Rc::ptr_eq(&second, &third));
    assert_eq!(third.statement, sql(q));
    // The same shape with other text (a literal) is still answered by its shape.
    let lit = sql_cached("SELECT * FROM posts WHERE class_id = 7 ORDER BY id DESC LIMIT 20");
    assert_eq!(lit.statement, sql(q));
    assert_eq!(raw_entries(), 1);
}

#[test]
fn sql_literals_become_placeholders() {
    assert_eq!(
        sql("SELECT * FROM users WHERE email = 'bob@example.com' AND id = 42"),
        "SELECT * FROM users WHERE email = ? AND id = ?"
    );
    assert_eq!(
        sql("select a from t where x = -3.5e-2 and y = 'it''s'"),
        "select a from t where x = ? and y = ?"
    );
    assert_eq!(
        sql("UPDATE t SET n = n - 1 WHERE k = E'a\\'b'"),
        "UPDATE t SET n = n - ? WHERE k = ?"
    );
    assert_eq!(
        sql("SELECT $$secret$$, $tag$ x $tag$, $1"),
        "SELECT ?, ?, ?"
    );
    assert_eq!(
        sql("SELECT x FROM t WHERE h = 0xDEADBEEF"),
        "SELECT x FROM t WHERE h = ?"
    );
}

#[test]
fn sql_in_lists_and_values_collapse() {
    assert_eq!(
        sql("SELECT * FROM t WHERE id IN (1, 2, 3, 4)"),
        "SELECT * FROM t WHERE id IN (?)"
    );
    assert_eq!(
        sql("SELECT * FROM t WHERE id in ($1,$2)"),
        "SELECT * FROM t WHERE id in (?)"
    );
    assert_eq!(
        sql("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')"),
        "INSERT INTO t (a, b) VALUES (?, ?)"
    );
    // The same shape with a different list length normalizes identically.
    assert_eq!(
        sql("select 1 from t where id in (7)"),
        sql("select 1 from t where id in (7,8,9)")
    );
}

#[test]
fn sql_whitespace_and_comments_fold() {
    assert_eq!(
        sql("SELECT  a,\n\tb -- who\nFROM /* hint */ t\n WHERE count(x) > 10"),
        "SELECT a, b FROM t WHERE count(x) > ?"
    );
    assert_eq!(sql("SELECT x::text FROM t"), "SELECT x::text FROM t");
    assert_eq!(
        sql("SELECT * FROM t WHERE a = :name"),
        "SELECT * FROM t WHERE a = ?"
    );
}

#[test]
fn sql_never_panics_on_garbage() {
    for s in [
        "'",
        "$",
        "$a",
        "/*",
        "--",
        "E'",
        "\"",
        "(",
        ")",
        ", ,",
        "\u{0}\u{ff}é'x",
        "1e",
        "-",
        "x-1",
        "IN ()",
    ] {
        let _ = sql(s);
        let _ = sql_operation(&sql(s));
    }
    assert_eq!(sql("'unterminated secret"), "?");
}

#[test]
fn sql_operation_names_verb_and_table() {
    assert_eq!(
        sql_operation("SELECT * FROM users WHERE id = ?").as_deref(),
        Some("SELECT users")
    );
    assert_eq!(
        sql_operation("insert INTO orders (a) VALUES (?)").as_deref(),
        Some("INSERT orders")
    );
    assert_eq!(
        sql_operation("UPDATE accounts SET x = ?").as_deref(),
        Some("UPDATE accounts")
    );
    assert_eq!(
        sql_operation("DELETE FROM s.sessions WHERE t < ?").as_deref(),
        Some("DELETE s.sessions")
    );
    assert_eq!(sql_operation("BEGIN").as_deref(), Some("BEGIN"));
    assert_eq!(sql_operation("hello world"), None);
}

#[test]
fn redis_keeps_command_and_key_pattern_never_values() {
    assert_eq!(
        redis("SET user:12345:profile {\"name\":\"bob\"}"),
        ("SET".into(), "SET user:?:profile".into())
    );
    assert_eq!(
        redis("get session:9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c"),
        ("GET".into(), "GET session:?".into())
    );
    assert_eq!(redis("AUTH hunter2").1, "AUTH");
    assert_eq!(redis("HSET cart:42 item 3").1, "HSET cart:?");
    assert_eq!(redis("").0, "UNKNOWN");
    assert_eq!(redis("PING").1, "PING");
}
