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

/// A Redis command with its first key turned into a pattern; values never appear.
/// Returns `(command, statement)`: `("GET", "GET user:?:profile")`.
pub fn redis(raw: &str) -> (String, String) {
    let mut statement = String::new();
    let command = redis_into(raw, &mut statement);
    (statement[..command].to_owned(), statement)
}

/// [`redis`] into `statement` (cleared first), which then starts with the command: returns
/// the command's length. The classifier calls this with a reused buffer, so a Redis span
/// costs no allocation here.
pub fn redis_into(raw: &str, statement: &mut String) -> usize {
    statement.clear();
    let b = raw.as_bytes();
    let class = |i: usize| REDIS_BYTES[usize::from(b[i])];
    // Words are split at ASCII whitespace (as `split_ascii_whitespace` does), so every word
    // boundary is a character boundary.
    let mut i = 0;
    while i < b.len() && class(i) & WS != 0 {
        i += 1;
    }
    // The command: upper-cased, letters, digits and `_` only, at most 32 of them.
    while i < b.len() && class(i) & WS == 0 {
        if class(i) & CMD != 0 && statement.len() < 32 {
            statement.push(char::from(b[i].to_ascii_uppercase()));
        }
        i += 1;
    }
    if statement.is_empty() {
        statement.push_str("UNKNOWN");
        return statement.len();
    }
    let command = statement.len();
    if no_key(statement) {
        return command;
    }
    while i < b.len() && class(i) & WS != 0 {
        i += 1;
    }
    let start = i;
    while i < b.len() && class(i) & WS == 0 {
        i += 1;
    }
    if start < i {
        let key = raw[start..i].trim_matches(|c| c == '"' || c == '\'');
        statement.push(' ');
        push_key_pattern(statement, key);
    }
    command
}

/// [`REDIS_BYTES`] classes: ASCII whitespace, key separators, bytes that make a key segment
/// variable (digits, non-ASCII), and command characters (letters, digits, `_`).
const WS: u8 = 1;
const SEP: u8 = 2;
const VAR: u8 = 4;
const CMD: u8 = 8;

/// The class bits of every byte: one lookup instead of a chain of comparisons per byte.
static REDIS_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut k = 0;
        if c.is_ascii_whitespace() {
            k |= WS;
        }
        if matches!(
            c,
            b':' | b'.' | b'/' | b'|' | b'-' | b'_' | b'#' | b'{' | b'}' | b'=' | b','
        ) {
            k |= SEP;
        }
        if c.is_ascii_digit() || !c.is_ascii() {
            k |= VAR;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            k |= CMD;
        }
        t[i] = k;
        i += 1;
    }
    t
};

/// Commands whose first argument is not a key (or is a secret): only the name is kept.
fn no_key(command: &str) -> bool {
    matches!(
        command,
        "ACL"
            | "AUTH"
            | "BGSAVE"
            | "CLIENT"
            | "CLUSTER"
            | "COMMAND"
            | "CONFIG"
            | "DBSIZE"
            | "DISCARD"
            | "ECHO"
            | "EVAL"
            | "EVALSHA"
            | "EVALSHA_RO"
            | "EVAL_RO"
            | "EXEC"
            | "FCALL"
            | "FLUSHALL"
            | "FLUSHDB"
            | "FUNCTION"
            | "HELLO"
            | "INFO"
            | "KEYS"
            | "LASTSAVE"
            | "LATENCY"
            | "MEMORY"
            | "MIGRATE"
            | "MONITOR"
            | "MULTI"
            | "PING"
            | "PSUBSCRIBE"
            | "PUBLISH"
            | "QUIT"
            | "RESET"
            | "SAVE"
            | "SCAN"
            | "SCRIPT"
            | "SELECT"
            | "SHUTDOWN"
            | "SLOWLOG"
            | "SUBSCRIBE"
            | "SWAPDB"
            | "TIME"
            | "UNSUBSCRIBE"
            | "WAIT"
    )
}

/// `user:12345:profile` → `user:?:profile`; segments holding a digit, or long enough to be a
/// token or hash, are variable.
pub fn key_pattern(key: &str) -> String {
    let mut out = String::with_capacity(key.len().min(256));
    push_key_pattern(&mut out, key);
    out
}

/// [`key_pattern`] appended to `out`.
fn push_key_pattern(out: &mut String, key: &str) {
    let base = out.len();
    // A segment holding a digit or a non-ASCII byte, or 24 bytes long, is variable.
    let push = |out: &mut String, seg: &str, variable: bool| {
        out.push_str(if variable || seg.len() >= 24 {
            "?"
        } else {
            seg
        });
    };
    // Separators are ASCII, so slicing at one is slicing at a character boundary.
    let mut start = 0;
    let mut variable = false;
    for (i, &c) in key.as_bytes().iter().enumerate() {
        let class = REDIS_BYTES[usize::from(c)];
        if class & SEP != 0 {
            push(out, &key[start..i], variable);
            out.push(char::from(c));
            start = i + 1;
            variable = false;
            if out.len() - base > 200 {
                return;
            }
        } else if class & VAR != 0 {
            variable = true;
        }
    }
    push(out, &key[start..], variable);
}

#[cfg(test)]
mod tests {
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
                    if b.get(j) == Some(&b'$')
                        && !b[i + 1..j].first().is_some_and(u8::is_ascii_digit)
                    {
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
}
