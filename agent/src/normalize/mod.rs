//! Statement normalization: what of a query may leave the agent.
//!
//! SQL: every literal (strings, numbers, hex, booleans stay) becomes `?`, bind placeholders
//! (`$1`, `:name`) become `?`, `IN (?, ?, ?)` collapses to `IN (?)`, repeated `VALUES` tuples
//! collapse to one, comments go and whitespace folds. The result groups the same query shape
//! under one text, which is what aggregates and the slow-query list need, and carries no
//! customer data. Redis: the command and a *pattern* of its first key (`user:?:profile`); never
//! a value.
//!
//! Both work on bytes with a hand-written scanner: one pass, no regex, no allocation per token,
//! and any input — unterminated quotes, binary garbage — gives some output rather than a panic.

mod redis;
#[cfg(test)]
mod tests;

pub use redis::{key_pattern, redis, redis_into};

/// One token of a SQL statement as the normalizer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    /// A literal or bind placeholder: becomes `?`.
    Lit,
    /// An identifier or keyword, verbatim.
    Word(&'a str),
    /// A quoted identifier (`"x"`, `` `x` ``, `[x]`), verbatim.
    Quoted(&'a str),
    /// One ASCII operator or punctuation character.
    Punct(u8),
}

/// What decides whether a following `-` is a sign: after a keyword like WHERE/AND/=/THEN a
/// `-` is a sign; after an identifier it is subtraction. A word is only looked up when a `-`
/// actually follows it.
#[derive(Clone, Copy)]
enum Prev<'a> {
    SignOk(bool),
    Word(&'a str),
}

/// The tokens of a statement: whitespace and comments skipped, literals recognized. Both
/// [`sql`] and [`sql_fingerprint`] read statements through this, so equal fingerprints mean
/// equal token sequences and therefore equal normalized text.
struct Tokens<'a> {
    raw: &'a str,
    b: &'a [u8],
    i: usize,
    prev: Prev<'a>,
}

impl<'a> Tokens<'a> {
    fn new(raw: &'a str) -> Self {
        Tokens {
            raw,
            b: raw.as_bytes(),
            i: 0,
            prev: Prev::SignOk(true),
        }
    }

    fn sign_ok(&self) -> bool {
        match self.prev {
            Prev::SignOk(ok) => ok,
            // Keywords are not known here, so only common ones are listed.
            Prev::Word(w) => matches!(
                upper(w, &mut [0; 16]),
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
            ),
        }
    }

    /// `raw[i..j]`; token bounds always fall on character boundaries (multi-byte characters
    /// are only ever consumed whole by identifiers), the lossy path is only a guard.
    fn text(&self, i: usize, j: usize) -> &'a str {
        self.raw.get(i..j).unwrap_or("\u{fffd}")
    }

    fn lit(&mut self, next: usize) -> Option<Tok<'a>> {
        self.i = next;
        self.prev = Prev::SignOk(false);
        Some(Tok::Lit)
    }
}

/// Bytes that continue an identifier: letters, digits, `_`, `.` and any non-ASCII byte.
static IDENT: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c >= 0x80;
        i += 1;
    }
    t
};

impl<'a> Tokens<'a> {
    /// A string literal whose body starts at `j`: '...' with '' or \' escapes.
    fn string(&mut self, mut j: usize) -> Option<Tok<'a>> {
        let b = self.b;
        while j < b.len() {
            match b[j] {
                b'\\' => j += 2,
                b'\'' if b.get(j + 1) == Some(&b'\'') => j += 2,
                b'\'' => {
                    j += 1;
                    break;
                }
                _ => j += 1,
            }
        }
        self.lit(j)
    }

    /// A number whose digits start at `j` (after any sign); hex 0x... and exponents included.
    fn number(&mut self, mut j: usize) -> Option<Tok<'a>> {
        let b = self.b;
        while j < b.len()
            && (b[j].is_ascii_alphanumeric()
                || b[j] == b'.'
                || ((b[j] == b'+' || b[j] == b'-') && matches!(b[j - 1], b'e' | b'E')))
        {
            j += 1;
        }
        self.lit(j)
    }

    /// Skips to the end of the line (not past it).
    fn line_comment(&mut self) {
        let rest = &self.b[self.i..];
        self.i += rest.iter().position(|c| *c == b'\n').unwrap_or(rest.len());
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Tok<'a>;

    /// One branch per first byte; the arms' order and guards are the precedence of the
    /// scanner: comments, string literals, dollar quotes, placeholders, numbers, quoted
    /// identifiers, identifiers, and anything else is punctuation.
    #[inline(always)]
    fn next(&mut self) -> Option<Tok<'a>> {
        let b = self.b;
        while self.i < b.len() {
            let i = self.i;
            let c = b[i];
            let next = b.get(i + 1).copied();
            match c {
                b' ' | b'\t' | b'\n' | b'\x0c' | b'\r' => self.i += 1,
                b'-' if next == Some(b'-') => self.line_comment(),
                b'#' => self.line_comment(),
                b'/' if next == Some(b'*') => {
                    let mut j = i + 2;
                    while j < b.len() && !(b[j] == b'*' && b.get(j + 1) == Some(&b'/')) {
                        j += 1;
                    }
                    self.i = (j + 2).min(b.len());
                }
                b'\'' => return self.string(i + 1),
                // E'..', N'..', B'..', X'..'.
                b'e' | b'E' | b'n' | b'N' | b'b' | b'B' | b'x' | b'X'
                    if next == Some(b'\'') && !prev_is_ident(b, i) =>
                {
                    return self.string(i + 2)
                }
                // Dollar quoting ($$...$$, $tag$...$tag$) and $1 placeholders.
                b'$' => {
                    let mut j = i + 1;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                        j += 1;
                    }
                    let end = if b.get(j) == Some(&b'$')
                        && !b[i + 1..j].first().is_some_and(u8::is_ascii_digit)
                    {
                        let tag = &b[i..=j];
                        find(b, j + 1, tag).map_or(b.len(), |p| p + tag.len())
                    } else {
                        j.max(i + 1)
                    };
                    return self.lit(end);
                }
                // Named placeholders `:name` (not `::type` casts).
                b':' if next.is_some_and(|n| n.is_ascii_alphabetic())
                    && (i == 0 || b[i - 1] != b':') =>
                {
                    let mut j = i + 1;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                        j += 1;
                    }
                    return self.lit(j);
                }
                b'0'..=b'9' => return self.number(i),
                // A sign in front of a number.
                b'-' if next.is_some_and(|d| d.is_ascii_digit() || d == b'.') && self.sign_ok() => {
                    return self.number(i + 1)
                }
                b'.' if next.is_some_and(|d| d.is_ascii_digit()) => return self.number(i),
                // Quoted identifiers: kept verbatim.
                b'"' | b'`' | b'[' => {
                    let close = if c == b'[' { b']' } else { c };
                    let rest = &b[i + 1..];
                    let j =
                        (i + 1 + rest.iter().position(|x| *x == close).unwrap_or(rest.len()) + 1)
                            .min(b.len());
                    self.i = j;
                    self.prev = Prev::SignOk(false);
                    return Some(Tok::Quoted(self.text(i, j)));
                }
                // Identifiers and keywords.
                _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                    let rest = &b[i..];
                    let j = i + rest
                        .iter()
                        .position(|x| !IDENT[usize::from(*x)])
                        .unwrap_or(rest.len());
                    let word = self.text(i, j);
                    self.i = j;
                    self.prev = Prev::Word(word);
                    return Some(Tok::Word(word));
                }
                // Operators and punctuation.
                _ => {
                    self.i = i + 1;
                    self.prev = Prev::SignOk(c != b')');
                    return Some(Tok::Punct(c));
                }
            }
        }
        None
    }
}

/// Normalizes a SQL statement.
pub fn sql(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(4096));
    for tok in Tokens::new(raw) {
        match tok {
            Tok::Lit => push_token(&mut out, "?"),
            Tok::Word(w) | Tok::Quoted(w) => push_token(&mut out, w),
            Tok::Punct(c) => {
                let mut buf = [0u8; 4];
                push_token(&mut out, (c as char).encode_utf8(&mut buf));
                if out.len() > 64 * 1024 {
                    break;
                }
            }
        }
    }
    collapse_lists(&out)
}

/// A 128-bit hash of a statement's token sequence: two statements with the same fingerprint
/// normalize to the same text (up to a hash collision, about 2^-100 for a cache's worth of
/// statements). Much cheaper than [`sql`]: no output is built.
pub fn sql_fingerprint(raw: &str) -> (u64, u64) {
    let mut h = crate::util::Mix::default();
    for tok in Tokens::new(raw) {
        match tok {
            Tok::Lit => h.word(1),
            Tok::Word(w) => {
                h.word(2);
                h.bytes(w.as_bytes());
            }
            Tok::Quoted(w) => {
                h.word(3);
                h.bytes(w.as_bytes());
            }
            Tok::Punct(c) => h.word(0x100 | u64::from(c)),
        }
    }
    (h.a, h.b)
}

/// A normalized statement and the operation named after it.
#[derive(Debug, PartialEq, Eq)]
pub struct NormalizedSql {
    pub statement: String,
    /// [`sql_operation`] of `statement`.
    pub operation: Option<String>,
    /// [`is_full_scan_suspect`] of `statement`.
    pub missing_where: bool,
}

/// Statements remembered per thread by [`sql_cached`]; past it the cache starts over.
pub const SQL_CACHE_ENTRIES: usize = 2048;
/// Normalized statements longer than this are not remembered (bounds the cache's memory to
/// about `SQL_CACHE_ENTRIES` × this).
pub const SQL_CACHE_MAX_BYTES: usize = 2048;

/// A statement shape: its fingerprint check, what it normalizes to, and the hash of the last
/// raw statement seen with it.
struct Shape {
    check: u64,
    normalized: std::rc::Rc<NormalizedSql>,
    last_raw: (u64, u64),
}

type SqlCache =
    std::collections::HashMap<u64, Shape, std::hash::BuildHasherDefault<crate::util::PassThrough>>;

/// Raw statements seen twice in a row for their shape: parameterized queries (`$1`, `?`),
/// which repeat byte for byte and need no tokenizing at all.
type RawCache = std::collections::HashMap<
    u64,
    (u64, std::rc::Rc<NormalizedSql>),
    std::hash::BuildHasherDefault<crate::util::PassThrough>,
>;

thread_local! {
    static SQL_CACHE: std::cell::RefCell<SqlCache> = std::cell::RefCell::default();
    static RAW_CACHE: std::cell::RefCell<RawCache> = std::cell::RefCell::default();
}

/// [`sql`] and [`sql_operation`], remembered per statement shape: apps send the same few
/// hundred shapes with different literals, and a fingerprint costs a fraction of normalizing.
/// A raw statement that repeats exactly (a parameterized query) is found by a hash of its
/// bytes, without the fingerprint's tokenizing; one that only ever differs in its literals
/// never enters that cache, so it costs just the hash. Per thread, so receivers never contend.
pub fn sql_cached(raw: &str) -> std::rc::Rc<NormalizedSql> {
    let mut h = crate::util::Mix::default();
    h.bytes(raw.as_bytes());
    let raw_hash = (h.a, h.b);
    let hit = RAW_CACHE.with(|c| {
        c.borrow()
            .get(&raw_hash.0)
            .filter(|(check, _)| *check == raw_hash.1)
            .map(|(_, n)| n.clone())
    });
    if let Some(n) = hit {
        return n;
    }
    let (a, b) = sql_fingerprint(raw);
    let hit = SQL_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let shape = c.get_mut(&a).filter(|s| s.check == b)?;
        let repeated = shape.last_raw == raw_hash;
        shape.last_raw = raw_hash;
        Some((shape.normalized.clone(), repeated))
    });
    if let Some((n, repeated)) = hit {
        if repeated {
            RAW_CACHE.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() >= SQL_CACHE_ENTRIES {
                    c.clear();
                }
                c.insert(raw_hash.0, (raw_hash.1, n.clone()));
            });
        }
        return n;
    }
    let statement = sql(raw);
    let n = std::rc::Rc::new(NormalizedSql {
        operation: sql_operation(&statement),
        missing_where: is_full_scan_suspect(&statement, true),
        statement,
    });
    if n.statement.len() <= SQL_CACHE_MAX_BYTES {
        SQL_CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= SQL_CACHE_ENTRIES {
                c.clear();
            }
            c.insert(
                a,
                Shape {
                    check: b,
                    normalized: n.clone(),
                    last_raw: raw_hash,
                },
            );
        });
    }
    n
}

/// `w` upper-cased into `buf` without allocating; `""` when longer than any keyword we test.
fn upper<'a>(w: &str, buf: &'a mut [u8; 16]) -> &'a str {
    let b = w.as_bytes();
    if b.len() > buf.len() || !w.is_ascii() {
        return "";
    }
    for (d, s) in buf.iter_mut().zip(b) {
        *d = s.to_ascii_uppercase();
    }
    std::str::from_utf8(&buf[..b.len()]).unwrap_or("")
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Appends a token with the spacing a reader expects: `f(a, b)`, `a.b`, `x = ?`.
fn push_token(out: &mut String, tok: &str) {
    let no_space_before = matches!(tok, "," | ")" | ";" | "." | "::" | ":");
    let last = out.as_bytes().last().copied();
    let no_space_after_last = matches!(last, None | Some(b'(') | Some(b'.')) || out.ends_with("::");
    let is_colon_cast = tok == ":" && last == Some(b':');
    if !(no_space_before
        || no_space_after_last
        || is_colon_cast
        || (tok == "("
            && last.is_some_and(|l| l.is_ascii_alphanumeric() || l == b'_')
            && !ends_with_keyword(out)))
    {
        out.push(' ');
    }
    out.push_str(tok);
}

/// `IN (` and `VALUES (` keep their space; function calls `count(` do not.
fn ends_with_keyword(out: &str) -> bool {
    let last_word = out.rsplit(' ').next().unwrap_or("");
    matches!(
        upper(last_word, &mut [0; 16]),
        "IN" | "VALUES"
            | "AS"
            | "ON"
            | "AND"
            | "OR"
            | "NOT"
            | "EXISTS"
            | "FROM"
            | "JOIN"
            | "WHERE"
            | "INTO"
            | "USING"
            | "ANY"
            | "ALL"
    ) || is_table_position(out)
}

/// True when the word before the last is INTO/TABLE/JOIN/FROM/UPDATE: `INSERT INTO t (a, b)`
/// keeps a space before the column list.
fn is_table_position(out: &str) -> bool {
    let mut words = out.rsplit(' ');
    words.next();
    matches!(
        upper(words.next().unwrap_or(""), &mut [0; 16]),
        "INTO" | "TABLE" | "JOIN" | "FROM" | "UPDATE"
    )
}

/// `(?, ?, ?)` → `(?)` after IN; `VALUES (?, ?), (?, ?)` → `VALUES (?, ?)`.
fn collapse_lists(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('(') {
        let (head, tail) = rest.split_at(p);
        out.push_str(head);
        // A group made only of `?`, commas and spaces.
        let close = tail.find(')');
        let inner = close.map(|c| &tail[1..c]);
        match inner {
            Some(inner) if !inner.is_empty() && inner.split(", ").all(|t| t == "?") => {
                let before = out.trim_end();
                let kw_in = before.len() >= 2
                    && before.as_bytes()[before.len() - 2..].eq_ignore_ascii_case(b"IN")
                    && (before.len() == 2 || before.as_bytes()[before.len() - 3] == b' ');
                let group = if kw_in {
                    "(?)"
                } else {
                    &tail[..=close.unwrap_or(0)]
                };
                out.push_str(group);
                rest = &tail[close.unwrap_or(0) + 1..];
                // Repeated identical tuples (`VALUES (?, ?), (?, ?)`) collapse to the first.
                let tuple = format!(", {}", &tail[..=close.unwrap_or(0)]);
                while rest.starts_with(&tuple) {
                    rest = &rest[tuple.len()..];
                }
            }
            _ => {
                out.push('(');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The verb and main table of a normalized statement, for the span's operation:
/// `SELECT users`, `INSERT orders`, `UPDATE accounts`. `None` when no verb is recognized.
pub fn sql_operation(normalized: &str) -> Option<String> {
    let mut words = normalized
        .split([' ', '(', ')', ',', ';'])
        .filter(|w| !w.is_empty());
    let verb = words.next()?;
    let mut vbuf = [0u8; 16];
    let verb = upper(verb, &mut vbuf);
    let known = [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "UPSERT",
        "MERGE",
        "REPLACE",
        "WITH",
        "CREATE",
        "ALTER",
        "DROP",
        "TRUNCATE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "CALL",
        "EXEC",
        "EXECUTE",
        "SET",
        "SHOW",
        "EXPLAIN",
        "COPY",
        "LOCK",
        "VACUUM",
        "ANALYZE",
        "GRANT",
        "REVOKE",
        "START",
        "SAVEPOINT",
        "RELEASE",
        "PREPARE",
        "DEALLOCATE",
        "USE",
        "DESCRIBE",
    ];
    if !known.contains(&verb) {
        return None;
    }
    // The table: the word after FROM / INTO / UPDATE / JOIN / TABLE.
    let table_kw = match verb {
        "UPDATE" => Some(true),
        "SELECT" | "INSERT" | "DELETE" | "UPSERT" | "MERGE" | "REPLACE" | "WITH" | "CREATE"
        | "ALTER" | "DROP" | "TRUNCATE" | "COPY" | "LOCK" => Some(false),
        _ => None,
    };
    let table = match table_kw {
        Some(true) => words.next().map(str::to_owned),
        Some(false) => {
            let mut found = None;
            let mut prev_buf = [0u8; 16];
            let mut prev_len = 0usize;
            for w in words {
                let mut buf = [0u8; 16];
                let up = upper(w, &mut buf);
                let prev = std::str::from_utf8(&prev_buf[..prev_len]).unwrap_or("");
                if matches!(
                    prev,
                    "FROM" | "INTO" | "JOIN" | "TABLE" | "UPDATE" | "TRUNCATE" | "COPY" | "LOCK"
                ) && !matches!(
                    up,
                    "IF" | "NOT" | "EXISTS" | "ONLY" | "LATERAL" | "SELECT" | "?"
                ) {
                    found = Some(w.to_owned());
                    break;
                }
                prev_len = up.len();
                prev_buf[..prev_len].copy_from_slice(up.as_bytes());
            }
            found
        }
        None => None,
    };
    Some(match table {
        Some(t) => format!("{verb} {t}"),
        None => verb.to_owned(),
    })
}

/// A SELECT (with FROM), UPDATE or DELETE without WHERE and without LIMIT / FETCH / TOP.
pub fn is_full_scan_suspect(statement: &str, missing_where: bool) -> bool {
    if !missing_where {
        return false;
    }
    // Bytes, not chars: every byte of a multi-byte character is a separator either way.
    let mut words = statement
        .as_bytes()
        .split(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .filter(|w| !w.is_empty());
    let Some(verb) = words.next() else {
        return false;
    };
    let select = verb.eq_ignore_ascii_case(b"SELECT");
    if !(select || verb.eq_ignore_ascii_case(b"UPDATE") || verb.eq_ignore_ascii_case(b"DELETE")) {
        return false;
    }
    let mut from = false;
    for w in words {
        if w.len() > 5 || w.len() < 3 {
            continue;
        }
        if w.eq_ignore_ascii_case(b"WHERE")
            || w.eq_ignore_ascii_case(b"LIMIT")
            || w.eq_ignore_ascii_case(b"FETCH")
            || w.eq_ignore_ascii_case(b"TOP")
        {
            return false;
        }
        from |= w.eq_ignore_ascii_case(b"FROM");
    }
    !select || from
}
