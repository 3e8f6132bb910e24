//! Redis: the command and a *pattern* of its first key (`user:?:profile`); never a value.

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
