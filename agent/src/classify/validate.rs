//! A span's ids and times, checked before anything else is read.

use stormwatch_model::limits::{MAX_DURATION_NS, MAX_FUTURE_NS, MIN_TIME_NS};

use super::incoming::{Incoming, Reject};

/// The clock as read at most 1,024 spans ago on this thread: never later than [`now_ns`], so
/// a start time it lets pass, the real clock would too; the real clock decides the rest.
fn recent_now_ns() -> i64 {
    thread_local! {
        static RECENT: std::cell::Cell<(i64, u16)> = const { std::cell::Cell::new((0, 0)) };
    }
    RECENT.with(|r| {
        let (mut now, left) = r.get();
        let left = match left.checked_sub(1) {
            Some(left) => left,
            None => {
                now = now_ns();
                1023
            }
        };
        r.set((now, left));
        now
    })
}

use crate::util::now_ns;

fn check_id(name: &str, id: &[u8], len: usize) -> Result<(), Reject> {
    if id.len() != len {
        return Err(format!(
            "{name} must be {len} bytes ({} hex digits), got {} bytes",
            len * 2,
            id.len()
        ));
    }
    if id.iter().all(|b| *b == 0) {
        return Err(format!("{name} must not be all zeros"));
    }
    Ok(())
}

/// A span's parent and times, once checked.
pub(super) struct Checked<'a> {
    /// Empty for a root (an all-zero parent is taken as none).
    pub parent: &'a [u8],
    pub start: i64,
    pub duration: i64,
}

/// Checks a span's ids and times: ids of the right length and not all zeros, a start after
/// 2000 and at most a day ahead, an end not before the start, at most a day long.
pub(super) fn ids_and_times<'a>(inc: &Incoming<'a>) -> Result<Checked<'a>, Reject> {
    check_id("traceId", inc.trace_id, 16)?;
    check_id("spanId", inc.span_id, 8)?;
    // An all-zero parent is what some SDKs send for a root: treat it as none.
    let parent = if inc.parent_span_id.iter().all(|b| *b == 0) {
        &[][..]
    } else {
        inc.parent_span_id
    };
    if !parent.is_empty() && parent.len() != 8 {
        return Err(format!(
            "parentSpanId must be 8 bytes or empty, got {} bytes",
            parent.len()
        ));
    }
    let start = i64::try_from(inc.start_ns).unwrap_or(i64::MAX);
    let end = i64::try_from(inc.end_ns).unwrap_or(i64::MAX);
    if start < MIN_TIME_NS {
        return Err(format!(
            "startTimeUnixNano {} is before 2000-01-01",
            inc.start_ns
        ));
    }
    if start > recent_now_ns().saturating_add(MAX_FUTURE_NS)
        && start > now_ns().saturating_add(MAX_FUTURE_NS)
    {
        return Err(format!(
            "startTimeUnixNano {} is more than a day in the future",
            inc.start_ns
        ));
    }
    if end < start {
        return Err(format!(
            "endTimeUnixNano {} is before startTimeUnixNano {}",
            inc.end_ns, inc.start_ns
        ));
    }
    let duration = end - start;
    if duration > MAX_DURATION_NS {
        return Err(format!("span lasts {duration} ns, more than one day"));
    }
    Ok(Checked {
        parent,
        start,
        duration,
    })
}
