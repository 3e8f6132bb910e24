//! Dependency calls counted per server operation: each `db`, `redis`, `http_client` or
//! `messaging` span is joined to the `http_server` span of the same service in the same trace
//! (the request's *entry*) and counted per (entry minute, service, entry operation, class,
//! peer). The collector's incident causes divide these by the operation's requests: the time
//! each peer adds to *that endpoint*, where the aggregates only know the service.
//!
//! Exporters send a request's spans in the order they end, so calls usually arrive before
//! their entry: they wait (at most [`WAIT`], at most [`MAX_WAITING_CALLS`]) and are counted
//! when it arrives. A call arriving after its entry is counted at once while the entry is
//! remembered ([`WAIT`], at most [`MAX_ENTRIES`]). Calls whose entry never comes (background
//! work, a trace entered through an untraced service) stay in the aggregates only and are
//! counted as unattributed. When one service has several server spans in one trace (it was
//! called twice), the first to arrive is the entry of all its calls there.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use stormwatch_model::enums::WireEnum;
use stormwatch_model::{DependencyClass, EntryCall};

use crate::received::Received;
use crate::util::{Mix, PassThrough};

/// How long a call waits for its entry, and an entry for late calls.
pub const WAIT: Duration = Duration::from_secs(30);
/// Most calls waiting for their entry; past it the oldest are let go (unattributed).
pub const MAX_WAITING_CALLS: usize = 200_000;
/// Most entries remembered for late calls; past it the oldest are forgotten.
pub const MAX_ENTRIES: usize = 100_000;

/// A trace and a service within it.
type Key = (u128, u64);

/// Hashes a [`Key`] with one multiply instead of SipHash (a fifth of this stage's
/// instructions): trace ids are random, and the multiply spreads sequential ones (a test's,
/// a home-made generator's) over the whole word, so they do not pile into one bucket. Not
/// keyed, like the aggregator's hash: the agent's clients are the apps beside it.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
}

type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

fn service_hash(service: &str) -> u64 {
    let mut h = Mix::default();
    h.bytes(service.as_bytes());
    h.a
}

struct Call {
    class: i32,
    peer: String,
    duration_ns: u64,
}

struct Entry {
    minute: i64,
    operation: String,
}

/// What the oldest-first expiry queue holds: when, whose, and which map.
struct Queued {
    at: Instant,
    key: Key,
    waiting: bool,
}

struct Row {
    call: EntryCall,
}

/// The rows counted since the last take, found by a hash of their key.
#[derive(Default)]
struct Rows {
    map: HashMap<u64, Vec<Row>, BuildHasherDefault<PassThrough>>,
    len: usize,
}

impl Rows {
    fn count(&mut self, service: &str, entry: &Entry, class: i32, peer: &str, duration_ns: u64) {
        let mut h = Mix::default();
        h.word(entry.minute as u64);
        h.word(class as u64);
        h.bytes(service.as_bytes());
        h.bytes(entry.operation.as_bytes());
        h.bytes(peer.as_bytes());
        let bucket = self.map.entry(h.a).or_default();
        let found = bucket.iter_mut().find(|r| {
            r.call.minute == entry.minute
                && r.call.class == class
                && r.call.peer == peer
                && r.call.entry == entry.operation
                && r.call.service == service
        });
        let row = match found {
            Some(r) => r,
            None => {
                bucket.push(Row {
                    call: EntryCall {
                        minute: entry.minute,
                        service: service.to_owned(),
                        entry: entry.operation.clone(),
                        class,
                        peer: peer.to_owned(),
                        count: 0,
                        sum_ns: 0,
                    },
                });
                self.len += 1;
                bucket.last_mut().expect("just pushed")
            }
        };
        row.call.count += 1;
        row.call.sum_ns = row.call.sum_ns.saturating_add(duration_ns);
    }
}

#[derive(Default)]
pub struct Entries {
    waiting: KeyMap<Vec<Call>>,
    waiting_calls: usize,
    entries: KeyMap<Entry>,
    queue: VecDeque<Queued>,
    rows: Rows,
    /// Calls let go without an entry since the last [`Entries::take_unattributed`].
    unattributed: u64,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("rows", &self.rows.len)
            .field("waiting_calls", &self.waiting_calls)
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn is_call(class: i32) -> bool {
    matches!(
        DependencyClass::from_number(class),
        Some(
            DependencyClass::Db
                | DependencyClass::Redis
                | DependencyClass::HttpClient
                | DependencyClass::Messaging
        )
    )
}

impl Entries {
    /// Joins `span` to its entry (or holds it until the entry comes), as of `now`.
    pub fn add(&mut self, span: &Received, now: Instant) {
        self.expire(now);
        let is_entry = span.class == DependencyClass::HttpServer as i32;
        if !is_entry && !is_call(span.class) {
            return;
        }
        let service = span.service();
        let key = (u128::from_be_bytes(span.trace_id), service_hash(service));
        if is_entry {
            if self.entries.contains_key(&key) {
                return;
            }
            let entry = Entry {
                minute: span.end_ns().div_euclid(60_000_000_000) * 60,
                operation: span.operation().to_owned(),
            };
            if let Some(calls) = self.waiting.remove(&key) {
                self.waiting_calls -= calls.len();
                for c in calls {
                    self.rows
                        .count(service, &entry, c.class, &c.peer, c.duration_ns);
                }
            }
            self.entries.insert(key, entry);
            self.queue.push_back(Queued {
                at: now,
                key,
                waiting: false,
            });
            while self.entries.len() > MAX_ENTRIES {
                self.let_go_oldest();
            }
            return;
        }
        let duration_ns = span.duration_ns.max(0) as u64;
        if let Some(entry) = self.entries.get(&key) {
            self.rows
                .count(service, entry, span.class, span.peer(), duration_ns);
            return;
        }
        let calls = self.waiting.entry(key).or_default();
        if calls.is_empty() {
            self.queue.push_back(Queued {
                at: now,
                key,
                waiting: true,
            });
        }
        calls.push(Call {
            class: span.class,
            peer: span.peer().to_owned(),
            duration_ns,
        });
        self.waiting_calls += 1;
        while self.waiting_calls > MAX_WAITING_CALLS {
            self.let_go_oldest();
        }
    }

    /// Lets go of what waited or was remembered longer than [`WAIT`].
    fn expire(&mut self, now: Instant) {
        while self
            .queue
            .front()
            .is_some_and(|q| now.saturating_duration_since(q.at) > WAIT)
        {
            self.let_go_oldest();
        }
    }

    fn let_go_oldest(&mut self) {
        let Some(q) = self.queue.pop_front() else {
            return;
        };
        if q.waiting {
            if let Some(calls) = self.waiting.remove(&q.key) {
                self.waiting_calls -= calls.len();
                self.unattributed += calls.len() as u64;
            }
        } else {
            self.entries.remove(&q.key);
        }
    }

    /// Calls let go without an entry since the last call.
    pub fn take_unattributed(&mut self) -> u64 {
        std::mem::take(&mut self.unattributed)
    }

    /// Number of rows held.
    pub fn len(&self) -> usize {
        self.rows.len
    }

    /// True when no row was counted since the last take (calls may still wait).
    pub fn is_empty(&self) -> bool {
        self.rows.len == 0
    }

    /// The rows counted so far, in key order.
    pub fn take(&mut self) -> Vec<EntryCall> {
        let mut rows: Vec<EntryCall> = self
            .rows
            .map
            .drain()
            .flat_map(|(_, b)| b)
            .map(|r| r.call)
            .collect();
        self.rows.len = 0;
        rows.sort_by(|a, b| {
            (a.minute, &a.service, &a.entry, a.class, &a.peer)
                .cmp(&(b.minute, &b.service, &b.entry, b.class, &b.peer))
        });
        rows
    }
}

#[cfg(test)]
mod tests;
