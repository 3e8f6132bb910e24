//! The disk spool: every batch is written here before it is sent, and deleted once the
//! collector accepted (or definitively refused) it.
//!
//! Writing first and sending from the spool gives one path for the normal case and for an
//! outage: batches leave in the order they were built, a crash or restart loses nothing that
//! was written, and replays after recovery are in order. A batch file holds exactly the body
//! that is POSTed (already compressed), behind a header, so replay needs no re-encoding.
//!
//! The header (`SWB2`, [`HEADER`] bytes, little-endian):
//!
//! | bytes | what |
//! | --- | --- |
//! | 0..4 | magic `SWB2` |
//! | 4..8 | CRC-32C of bytes 8..33 (the fields below) |
//! | 8..16 | body length |
//! | 16..20 | kept spans in the batch |
//! | 20..28 | spans its aggregates count (sum of `Aggregate::count`), so dropping the batch counts them without decoding it |
//! | 28 | compression: 0 none, 1 zstd, 2 gzip |
//! | 29..33 | CRC-32C of the body |
//!
//! Files of the previous version (`SWB1`: magic, kept spans, compression, 9 bytes) are still
//! replayed; their aggregated count is read from the body once, at open. Only `SWB2` is written.
//! A file that is short, of unknown magic, of the wrong length or whose CRC does not match —
//! found at open (every file is read in full then) or when read for sending — is moved to
//! `quarantine/` (bounded by [`QUARANTINE_MAX_BYTES`]), logged and counted, never sent.
//!
//! File names are `{ordinal:020}.{level:02}.swb`. A batch the collector found too big (413) is
//! split in two children that take the two halves of the parent's ordinal range
//! (`2^(20-level)` wide), so the children sort exactly where the parent was.
//!
//! **A split is atomic.** The two children are written as `.swc` files (a split child not yet
//! committed) and fsynced; deleting the parent (then fsyncing the directory) is the commit;
//! then each child is renamed to `.swb`. At open, a `.swc` whose parent file (level one less,
//! the ordinal rounded down to the parent's range) is still there belongs to a split that did
//! not commit and is deleted: the parent is sent again whole, under its own sequence number,
//! which the collector never stored (it answered 413). A `.swc` without its parent belongs to a
//! committed split and is renamed to `.swb`. Whatever the point a kill or crash strikes —
//! during either child, before or after the parent's deletion, between the two renames — each
//! span is spooled exactly once after restart: in the parent, or in both children, never both.
//! (A child torn by a power cut without `fsync` is caught by its checksum.)
//!
//! The spool is bounded by bytes; when full it either deletes the oldest batches (counting
//! their spans as dropped) or makes the writer wait, as configured.
//!
//! A batch the collector refuses for good is moved to `dead-letter/` beside the batch files
//! (with a `.json` note of why), so it never blocks the queue and an operator can still look
//! at it or resend it. That folder is bounded too ([`Options::dead_letter_max_bytes`],
//! [`DEAD_LETTER_MAX_FILES`]): the oldest dead letters are deleted first.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::config::{Compression, Shipping, WhenFull};
use crate::metrics::{DropReason, Metrics};
use files::{commit_split, hold, lock_dir, prune, sync_dir, write_file, SplitStep};
use format::{file_name, header, parse, parse_name};
pub use format::{Corrupt, Counts, HEADER};

mod files;
mod format;

/// Ordinals of consecutive batches are this far apart, leaving room for 20 levels of splits.
const STRIDE_BITS: u32 = 20;
/// With `when_full = "block"`, how long a push that failed to write waits for the shipper to
/// free space before it tries again anyway (the disk may have been freed by someone else).
pub const WRITE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// Where batches the collector refused for good are kept, under the spool directory.
pub const DEAD_LETTER_DIR: &str = "dead-letter";
/// Where unreadable batch files are moved, under the spool directory.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Most bytes and files kept in [`QUARANTINE_DIR`]; the oldest are deleted beyond them.
pub const QUARANTINE_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const QUARANTINE_MAX_FILES: usize = 1000;
/// Most dead letters kept, however small (a flood of tiny refused batches must not fill the
/// directory); beyond it the oldest are deleted.
pub const DEAD_LETTER_MAX_FILES: usize = 10_000;

/// The spool's limits, from `[shipping]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Most bytes of batch files.
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// Most bytes kept in [`DEAD_LETTER_DIR`].
    pub dead_letter_max_bytes: u64,
    /// fsync each batch file and the directory before a push returns.
    pub fsync: bool,
}

impl Options {
    pub fn of(sh: &Shipping) -> Options {
        Options {
            max_bytes: sh.spool_max_bytes,
            when_full: sh.when_full,
            dead_letter_max_bytes: sh.dead_letter_max_bytes,
            fsync: sh.spool_fsync,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::of(&Shipping::default())
    }
}

/// Why a batch went to the dead-letter folder: the collector's answer.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Refusal {
    /// HTTP status (400, 413).
    pub status: u16,
    /// The collector's reason (`error` of its JSON answer, else the start of its body).
    pub error: String,
    /// The field it named, if any.
    pub field: String,
}

/// One spooled batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ordinal: u64,
    pub level: u8,
    /// Kept spans in the batch.
    pub spans: u32,
    /// Spans its aggregates count (every span is counted before sampling).
    pub aggregated: u64,
    /// File size, header included.
    pub bytes: u64,
    pub compression: Compression,
}

/// Reads a batch file in full (the checksum covers the whole body: at disk speed, once a
/// start) and indexes it, or puts it with the files to quarantine.
fn index_file(
    path: PathBuf,
    ordinal: u64,
    level: u8,
    entries: &mut Vec<Entry>,
    bad: &mut Vec<(PathBuf, Corrupt, Option<Counts>)>,
) -> std::io::Result<()> {
    let data = std::fs::read(&path)?;
    match parse(&data) {
        Ok(p) => entries.push(Entry {
            ordinal,
            level,
            spans: p.counts.spans,
            aggregated: p.counts.aggregated,
            bytes: data.len() as u64,
            compression: p.compression,
        }),
        Err((why, counts)) => bad.push((path, why, counts)),
    }
    Ok(())
}

impl Entry {
    fn file_name(&self) -> String {
        file_name(self.ordinal, self.level)
    }
}

#[derive(Debug)]
struct Inner {
    entries: VecDeque<Entry>,
    bytes: u64,
    next: u64,
    opts: Options,
    /// The entry the shipper is sending: never deleted under it.
    in_flight: Option<u64>,
}

/// The spool. Shared as `Arc<Spool>` by the pipeline (writer) and the shipper (reader).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Held for the spool's lifetime: a second agent on the same directory would replay (and
    /// delete) this agent's batches as its own.
    _lock: std::fs::File,
    inner: Mutex<Inner>,
    added: Notify,
    freed: Notify,
    metrics: Arc<Metrics>,
    /// Tests: this many next batch writes fail as on a full disk.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicU32,
}

enum Reserve {
    Write(Entry),
    Dropped,
    Wait,
}

/// Why a spooled batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Left in place; may work later.
    #[error("cannot read the spool file: {0}")]
    Io(#[from] std::io::Error),
    /// Quarantined, spans counted.
    #[error("corrupt spool file: {0}")]
    Corrupt(Corrupt),
}

/// Why a push did not store the batch.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("spool write failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("batch of {0} bytes is larger than the whole spool")]
    TooBig(u64),
}

impl Spool {
    /// Opens (creating) `dir` and indexes the batches a previous run left, oldest first.
    pub fn open(dir: &Path, opts: Options, metrics: Arc<Metrics>) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        std::fs::create_dir_all(dir.join(DEAD_LETTER_DIR))?;
        std::fs::create_dir_all(dir.join(QUARANTINE_DIR))?;
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        let mut uncommitted = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            if let Some(key) = name.strip_suffix(".swc").and_then(parse_name) {
                uncommitted.push((key, item.path()));
                continue;
            }
            let Some(stem) = name.strip_suffix(".swb") else {
                continue;
            };
            let Some((ordinal, level)) = parse_name(stem) else {
                continue;
            };
            index_file(item.path(), ordinal, level, &mut entries, &mut bad)?;
        }
        // Split children: the parent still on disk means the split did not commit.
        let on_disk = |ordinal: u64, level: u8| {
            entries
                .iter()
                .any(|e| (e.ordinal, e.level) == (ordinal, level))
                || bad
                    .iter()
                    .any(|(p, _, _)| *p == dir.join(file_name(ordinal, level)))
        };
        let mut committed = Vec::new();
        for ((ordinal, level), path) in uncommitted {
            let parent_level = level.saturating_sub(1);
            let range = 1u64 << (STRIDE_BITS - u32::from(parent_level).min(STRIDE_BITS));
            if level > 0 && on_disk(ordinal & !(range - 1), parent_level) {
                tracing::info!(file = %path.display(), "split not committed before the stop; its parent is kept");
                let _ = std::fs::remove_file(&path);
            } else {
                committed.push((ordinal, level, path));
            }
        }
        for (ordinal, level, path) in committed {
            let to = dir.join(file_name(ordinal, level));
            std::fs::rename(&path, &to)?;
            index_file(to, ordinal, level, &mut entries, &mut bad)?;
        }
        sync_dir(dir)?;
        entries.sort_by_key(|e| e.ordinal);
        let bytes = entries.iter().map(|e| e.bytes).sum();
        let next = entries
            .last()
            .map_or(0, |e| ((e.ordinal >> STRIDE_BITS) + 1) << STRIDE_BITS);
        if !entries.is_empty() {
            tracing::info!(
                batches = entries.len(),
                bytes,
                "spool holds batches from a previous run; replaying in order"
            );
        }
        let spool = Spool {
            dir: dir.to_owned(),
            _lock: lock,
            inner: Mutex::new(Inner {
                entries: entries.into(),
                bytes,
                next,
                opts,
                in_flight: None,
            }),
            added: Notify::new(),
            freed: Notify::new(),
            metrics,
            #[cfg(test)]
            fail_writes: Default::default(),
        };
        spool.publish(&spool.lock());
        for (path, why, counts) in bad {
            spool.quarantine_file(&path, &why, counts);
        }
        spool.prune_dead_letters();
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        self.metrics.spool_bytes.store(inner.bytes, Relaxed);
        self.metrics
            .spool_batches
            .store(inner.entries.len() as u64, Relaxed);
    }

    /// Applies reloaded limits.
    pub fn reconfigure(&self, opts: Options) {
        let shrunk = {
            let mut i = self.lock();
            let shrunk = opts.dead_letter_max_bytes < i.opts.dead_letter_max_bytes;
            i.opts = opts;
            shrunk
        };
        self.freed.notify_waiters();
        if shrunk {
            self.prune_dead_letters();
        }
    }

    /// The dead-letter folder.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.dir.join(DEAD_LETTER_DIR)
    }

    /// Batches and bytes held.
    pub fn usage(&self) -> (usize, u64) {
        let i = self.lock();
        (i.entries.len(), i.bytes)
    }

    fn path(&self, e: &Entry) -> PathBuf {
        self.dir.join(e.file_name())
    }

    /// Appends a batch body. With `drop_oldest` it deletes old batches to make room; with
    /// `block` it waits until the shipper frees enough.
    pub async fn push(
        &self,
        body: &[u8],
        counts: Counts,
        compression: Compression,
    ) -> Result<(), PushError> {
        let size = (body.len() + HEADER) as u64;
        let mut evicted_for_error = false;
        loop {
            let waiter = self.freed.notified();
            match self.reserve(size)? {
                Reserve::Write(mut entry) => {
                    entry.spans = counts.spans;
                    entry.aggregated = counts.aggregated;
                    entry.compression = compression;
                    if let Err(error) = self.write(&entry, body).await {
                        let when_full = {
                            let mut i = self.lock();
                            i.bytes -= size;
                            i.opts.when_full
                        };
                        self.metrics.spool_write_errors.fetch_add(1, Relaxed);
                        // A full disk (or any write error) is a full spool: the same policy.
                        match when_full {
                            WhenFull::DropOldest if !evicted_for_error => {
                                evicted_for_error = true;
                                if self.evict_oldest(&format!(
                                    "cannot write the spool ({error}): dropped the oldest batch to retry once"
                                )) {
                                    continue;
                                }
                                return Err(error.into());
                            }
                            WhenFull::DropOldest => return Err(error.into()),
                            WhenFull::Block => {
                                tracing::warn!(%error, spans = counts.spans, "cannot write the spool; waiting for the shipper to free space (when_full = block)");
                                // Space may come from elsewhere on the disk too: retry anyway
                                // after a while.
                                let _ = tokio::time::timeout(WRITE_RETRY, waiter).await;
                                continue;
                            }
                        }
                    }
                    let mut i = self.lock();
                    // Keep order even if an older push finished writing later.
                    let pos = i.entries.partition_point(|x| x.ordinal < entry.ordinal);
                    i.entries.insert(pos, entry);
                    self.publish(&i);
                    drop(i);
                    self.added.notify_one();
                    return Ok(());
                }
                Reserve::Dropped => continue,
                Reserve::Wait => waiter.await,
            }
        }
    }

    /// One step of [`Spool::push`] under the lock: reserve room, or delete the oldest batch,
    /// or say to wait.
    fn reserve(&self, size: u64) -> Result<Reserve, PushError> {
        let mut i = self.lock();
        if size > i.opts.max_bytes {
            return Err(PushError::TooBig(size));
        }
        if i.bytes + size <= i.opts.max_bytes {
            let ordinal = i.next;
            i.next += 1 << STRIDE_BITS;
            // Reserved before writing so concurrent pushes cannot overshoot.
            i.bytes += size;
            return Ok(Reserve::Write(Entry {
                ordinal,
                level: 0,
                spans: 0,
                aggregated: 0,
                bytes: size,
                compression: Compression::None,
            }));
        }
        if i.opts.when_full == WhenFull::Block {
            return Ok(Reserve::Wait);
        }
        drop(i);
        if self.evict_oldest("spool full (spool_max_bytes): dropped the oldest batch") {
            Ok(Reserve::Dropped)
        } else {
            // Only the in-flight batch is left and it alone is too much with this one.
            Err(PushError::TooBig(size))
        }
    }

    /// Deletes the oldest batch not in flight, counting it `spool_full`. False if none.
    fn evict_oldest(&self, what: &str) -> bool {
        let mut i = self.lock();
        let in_flight = i.in_flight;
        let Some(pos) = i.entries.iter().position(|e| Some(e.ordinal) != in_flight) else {
            return false;
        };
        let Some(e) = i.entries.remove(pos) else {
            return false;
        };
        i.bytes -= e.bytes;
        self.publish(&i);
        drop(i);
        let _ = std::fs::remove_file(self.path(&e));
        self.metrics
            .batch_dropped(DropReason::SpoolFull, u64::from(e.spans), e.aggregated);
        tracing::error!(
            spans = e.spans,
            aggregated_spans = e.aggregated,
            bytes = e.bytes,
            "{what}"
        );
        true
    }

    async fn write(&self, e: &Entry, body: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if self
            .fail_writes
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            // ENOSPC, as a full disk reports it.
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let counts = Counts {
            spans: e.spans,
            aggregated: e.aggregated,
        };
        let mut data = Vec::with_capacity(body.len() + HEADER);
        data.extend_from_slice(&header(counts, e.compression, body));
        data.extend_from_slice(body);
        let (dir, path) = (self.dir.clone(), self.path(e));
        let fsync = self.lock().opts.fsync;
        tokio::task::spawn_blocking(move || write_file(&dir, &path, "tmp", &data, fsync))
            .await
            .map_err(std::io::Error::other)?
    }

    /// The oldest batch, marked in flight; waits until there is one.
    pub async fn next(&self) -> Entry {
        loop {
            let waiter = self.added.notified();
            if let Some(e) = self.peek() {
                return e;
            }
            waiter.await;
        }
    }

    /// The oldest batch, marked in flight, if any.
    pub fn peek(&self) -> Option<Entry> {
        let mut i = self.lock();
        let e = i.entries.front().cloned()?;
        i.in_flight = Some(e.ordinal);
        Some(e)
    }

    /// Reads a batch's body, checked. A corrupt file is quarantined (and its spans counted)
    /// here; an I/O error leaves it in place.
    pub async fn read(&self, e: &Entry) -> Result<Vec<u8>, ReadError> {
        let mut data = tokio::fs::read(self.path(e)).await?;
        match parse(&data) {
            Ok(p) => {
                data.drain(..p.header);
                Ok(data)
            }
            Err((why, _)) => {
                self.quarantine(e, &why);
                Err(ReadError::Corrupt(why))
            }
        }
    }

    /// Deletes a batch (shipped).
    pub fn remove(&self, e: &Entry) {
        self.forget(e);
        let _ = std::fs::remove_file(self.path(e));
        self.freed.notify_waiters();
    }

    /// Takes `e` out of the index (its file is dealt with by the caller).
    fn forget(&self, e: &Entry) {
        let mut i = self.lock();
        if let Some(pos) = i
            .entries
            .iter()
            .position(|x| x.ordinal == e.ordinal && x.level == e.level)
        {
            if let Some(x) = i.entries.remove(pos) {
                i.bytes -= x.bytes;
            }
        }
        if i.in_flight == Some(e.ordinal) {
            i.in_flight = None;
        }
        self.publish(&i);
    }

    /// Moves a batch the collector refused for good out of the queue into the dead-letter
    /// folder beside a `.json` note of the refusal, then deletes the oldest dead letters beyond
    /// the limits. Returns the path kept. When the move fails the batch is deleted: the queue
    /// must go on either way.
    pub fn dead_letter(&self, e: &Entry, why: &Refusal) -> std::io::Result<PathBuf> {
        self.forget(e);
        self.freed.notify_waiters();
        let note = serde_json::json!({
            "status": why.status,
            "error": why.error,
            "field": why.field,
            "spans": e.spans,
            "aggregated_spans": e.aggregated,
            "compression": format!("{:?}", e.compression).to_lowercase(),
        });
        let kept = hold(&self.path(e), &self.dead_letter_dir(), note);
        if kept.is_err() {
            let _ = std::fs::remove_file(self.path(e));
        }
        self.metrics.dead_letter_batches.fetch_add(1, Relaxed);
        self.prune_dead_letters();
        kept
    }

    /// Moves an unreadable batch out of the queue into the quarantine folder, counts its spans
    /// (when its header could be trusted) as dropped and logs it.
    pub fn quarantine(&self, e: &Entry, why: &Corrupt) {
        self.forget(e);
        self.freed.notify_waiters();
        let counts = Counts {
            spans: e.spans,
            aggregated: e.aggregated,
        };
        self.quarantine_file(&self.path(e), why, Some(counts));
    }

    fn quarantine_file(&self, path: &Path, why: &Corrupt, counts: Option<Counts>) {
        let note = serde_json::json!({
            "error": why.to_string(),
            "spans": counts.map(|c| c.spans),
            "aggregated_spans": counts.map(|c| c.aggregated),
        });
        let dir = self.dir.join(QUARANTINE_DIR);
        let kept = hold(path, &dir, note);
        if kept.is_err() {
            let _ = std::fs::remove_file(path);
        }
        prune(&dir, QUARANTINE_MAX_BYTES, QUARANTINE_MAX_FILES);
        self.metrics.spool_quarantined.fetch_add(1, Relaxed);
        let c = counts.unwrap_or_default();
        self.metrics
            .batch_dropped(DropReason::SpoolCorrupt, u64::from(c.spans), c.aggregated);
        tracing::error!(
            file = %path.display(),
            error = %why,
            spans = counts.map(|c| c.spans),
            aggregated_spans = counts.map(|c| c.aggregated),
            kept_as = ?kept.as_ref().ok().map(|p| p.display().to_string()),
            "corrupt spool file quarantined, not sent"
        );
    }

    /// Deletes the oldest dead letters beyond the limits and publishes what is left.
    fn prune_dead_letters(&self) {
        let max = self.lock().opts.dead_letter_max_bytes;
        let (files, bytes) = prune(&self.dead_letter_dir(), max, DEAD_LETTER_MAX_FILES);
        self.metrics.dead_letter_files.store(files, Relaxed);
        self.metrics.dead_letter_bytes.store(bytes, Relaxed);
    }

    /// Replaces `e` by two halves (bodies already encoded), in its place in the order,
    /// atomically (see the module doc).
    pub async fn split(&self, e: &Entry, halves: [(Vec<u8>, Counts); 2]) -> Result<(), PushError> {
        self.split_until(e, halves, SplitStep::Done).await
    }

    /// [`Spool::split`], stopping after `until` as a kill would (tests stop it early).
    async fn split_until(
        &self,
        e: &Entry,
        halves: [(Vec<u8>, Counts); 2],
        until: SplitStep,
    ) -> Result<(), PushError> {
        if u32::from(e.level) >= STRIDE_BITS {
            return Err(PushError::TooBig(e.bytes));
        }
        let half = 1u64 << (STRIDE_BITS - 1 - u32::from(e.level));
        let mut children = Vec::new();
        let mut files = Vec::new();
        for (k, (body, counts)) in halves.into_iter().enumerate() {
            let c = Entry {
                ordinal: e.ordinal + k as u64 * half,
                level: e.level + 1,
                spans: counts.spans,
                aggregated: counts.aggregated,
                bytes: (body.len() + HEADER) as u64,
                compression: e.compression,
            };
            let mut data = Vec::with_capacity(body.len() + HEADER);
            data.extend_from_slice(&header(counts, c.compression, &body));
            data.extend_from_slice(&body);
            files.push((self.path(&c), data));
            children.push(c);
        }
        let (dir, parent) = (self.dir.clone(), self.path(e));
        let fsync = self.lock().opts.fsync;
        tokio::task::spawn_blocking(move || commit_split(&dir, &parent, &files, fsync, until))
            .await
            .map_err(std::io::Error::other)??;
        if until != SplitStep::Done {
            return Ok(());
        }
        let mut i = self.lock();
        if let Some(pos) = i
            .entries
            .iter()
            .position(|x| x.ordinal == e.ordinal && x.level == e.level)
        {
            i.entries.remove(pos);
            i.bytes -= e.bytes;
        }
        for c in children.into_iter().rev() {
            i.bytes += c.bytes;
            let pos = i.entries.partition_point(|x| x.ordinal < c.ordinal);
            i.entries.insert(pos, c);
        }
        i.in_flight = None;
        self.publish(&i);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
