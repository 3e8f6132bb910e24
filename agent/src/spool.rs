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

const MAGIC: &[u8; 4] = b"SWB2";
/// Header length of an `SWB2` file.
pub const HEADER: usize = 33;
/// The previous version's format, still read.
const MAGIC_V1: &[u8; 4] = b"SWB1";
const HEADER_V1: usize = 9;
/// Largest decompressed body read from an `SWB1` file to count its aggregates.
const MAX_V1_BODY: usize = 512 * 1024 * 1024;
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

/// What a batch holds, as counted into its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Kept spans.
    pub spans: u32,
    /// Spans its aggregates count.
    pub aggregated: u64,
}

/// Why a batch file cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    #[error("shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("not a spool file (magic {0:?})")]
    Magic([u8; 4]),
    #[error("header checksum mismatch")]
    HeaderCrc,
    #[error("unknown compression {0}")]
    Compression(u8),
    #[error("body is {file} bytes, header says {header} (truncated or appended to)")]
    Length { header: u64, file: u64 },
    #[error("body checksum mismatch")]
    BodyCrc,
    #[error("body cannot be decoded: {0}")]
    Undecodable(String),
}

/// A checked batch file: its counts, compression and where its body starts. `counts` is also
/// given with a [`Corrupt`] body when the header itself checked out.
#[derive(Debug)]
struct Parsed {
    counts: Counts,
    compression: Compression,
    header: usize,
}

/// Encodes the `SWB2` header of `body`.
fn header(counts: Counts, compression: Compression, body: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    h[16..20].copy_from_slice(&counts.spans.to_le_bytes());
    h[20..28].copy_from_slice(&counts.aggregated.to_le_bytes());
    h[28] = compression_byte(compression);
    h[29..33].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let crc = crc32c::crc32c(&h[8..]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

/// Checks a whole batch file (either format). On error, the counts are those of a header that
/// checked out, if any: a corrupt body's spans can still be counted as lost.
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

fn parse(data: &[u8]) -> Result<Parsed, (Corrupt, Option<Counts>)> {
    if data.len() < HEADER_V1 {
        return Err((Corrupt::Short(data.len()), None));
    }
    let magic: [u8; 4] = data[..4].try_into().unwrap_or_default();
    if &magic == MAGIC_V1 {
        return parse_v1(data);
    }
    if &magic != MAGIC {
        return Err((Corrupt::Magic(magic), None));
    }
    if data.len() < HEADER {
        return Err((Corrupt::Short(data.len()), None));
    }
    if le_u32(&data[4..8]) != crc32c::crc32c(&data[8..HEADER]) {
        return Err((Corrupt::HeaderCrc, None));
    }
    let counts = Counts {
        spans: le_u32(&data[16..20]),
        aggregated: le_u64(&data[20..28]),
    };
    let Some(compression) = compression_of(data[28]) else {
        return Err((Corrupt::Compression(data[28]), Some(counts)));
    };
    let (want, body) = (le_u64(&data[8..16]), &data[HEADER..]);
    if want != body.len() as u64 {
        let file = body.len() as u64;
        return Err((Corrupt::Length { header: want, file }, Some(counts)));
    }
    if le_u32(&data[29..33]) != crc32c::crc32c(body) {
        return Err((Corrupt::BodyCrc, Some(counts)));
    }
    Ok(Parsed {
        counts,
        compression,
        header: HEADER,
    })
}

/// An `SWB1` file: no length or checksum, and no aggregated count, so the body is decoded
/// (which checks it as well as anything can).
fn parse_v1(data: &[u8]) -> Result<Parsed, (Corrupt, Option<Counts>)> {
    let spans = le_u32(&data[4..8]);
    let Some(compression) = compression_of(data[8]) else {
        return Err((Corrupt::Compression(data[8]), None));
    };
    match crate::shipper::decode_body(&data[HEADER_V1..], compression, MAX_V1_BODY) {
        Ok(batch) => Ok(Parsed {
            counts: Counts {
                spans,
                aggregated: batch.aggregates.iter().map(|a| a.count).sum(),
            },
            compression,
            header: HEADER_V1,
        }),
        Err(e) => Err((Corrupt::Undecodable(e.to_string()), None)),
    }
}

impl Entry {
    fn file_name(&self) -> String {
        file_name(self.ordinal, self.level)
    }
}

fn file_name(ordinal: u64, level: u8) -> String {
    format!("{ordinal:020}.{level:02}.swb")
}

/// `(ordinal, level)` from a file name's stem, `{ordinal}.{level}`.
fn parse_name(stem: &str) -> Option<(u64, u8)> {
    let (ord, level) = stem.split_once('.')?;
    Some((ord.parse().ok()?, level.parse().ok()?))
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

fn compression_byte(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Zstd => 1,
        Compression::Gzip => 2,
    }
}

fn compression_of(b: u8) -> Option<Compression> {
    match b {
        0 => Some(Compression::None),
        1 => Some(Compression::Zstd),
        2 => Some(Compression::Gzip),
        _ => None,
    }
}

/// Takes `<dir>/spool.lock` (released when the process ends, however it ends).
fn lock_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    let path = dir.join("spool.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "another agent is using this spool directory (it holds {}); give each agent its own --spool-dir",
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Writes a batch file: into `<path>.<tmp>`, then (for `tmp` = `"tmp"`) renamed into place, so
/// a batch file is whole or absent. With `fsync`, the data reaches the disk before the rename
/// and the rename before this returns: a push is acknowledged only once a power cut cannot
/// take the batch back.
fn write_file(dir: &Path, path: &Path, tmp: &str, data: &[u8], fsync: bool) -> std::io::Result<()> {
    let tmp = path.with_extension(tmp);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, data)?;
        if fsync {
            f.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if tmp.extension().is_some_and(|x| x == "tmp") {
        std::fs::rename(&tmp, path)?;
    }
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes the directory's entries (a rename, a new or deleted file) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Moves a batch file into a holding folder (dead letters, quarantine) as
/// `{unix ns}-{file name}` (names sort oldest first and never collide with a file of an
/// earlier run, whose ordinals may repeat), beside `note` as `.json`.
fn hold(from: &Path, dir: &Path, note: serde_json::Value) -> std::io::Result<PathBuf> {
    let name = from.file_name().unwrap_or_default().to_string_lossy();
    let to = dir.join(format!("{:020}-{name}", crate::util::now_ns()));
    std::fs::rename(from, &to)?;
    std::fs::write(to.with_extension("json"), format!("{note:#}\n"))?;
    Ok(to)
}

/// Keeps at most `max_bytes` and `max_files` batches in a holding folder (dead letters,
/// quarantine): deletes the oldest batch files (names sort by age) with their `.json` notes.
/// Returns the batch files and bytes (notes included) left.
fn prune(dir: &Path, max_bytes: u64, max_files: usize) -> (u64, u64) {
    let mut batches: Vec<(String, u64)> = Vec::new();
    let mut notes = std::collections::HashMap::new();
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let len = item.metadata().map_or(0, |m| m.len());
        if let Some(stem) = name.strip_suffix(".json") {
            notes.insert(format!("{stem}.swb"), len);
        } else if name.ends_with(".swb") {
            batches.push((name, len));
        }
    }
    batches.sort();
    let size = |(name, len): &(String, u64)| len + notes.get(name).copied().unwrap_or(0);
    let mut bytes: u64 = batches.iter().map(size).sum();
    let mut files = batches.len();
    for b in &batches {
        if bytes <= max_bytes && files <= max_files {
            break;
        }
        let path = dir.join(&b.0);
        if std::fs::remove_file(&path).is_ok() {
            let _ = std::fs::remove_file(path.with_extension("json"));
            tracing::warn!(file = %path.display(), "deleted an old batch to keep its folder within its limit");
            bytes -= size(b);
            files -= 1;
        }
    }
    (files as u64, bytes)
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

/// The steps of a split's commit, in order; a kill can fall after any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SplitStep {
    /// The first child's `.swc` is written.
    FirstChild,
    /// Both `.swc` are written and synced.
    BothChildren,
    /// The parent is deleted: the split is committed.
    ParentDeleted,
    /// The first child is renamed to `.swb`.
    FirstRenamed,
    /// Both are.
    Done,
}

/// Writes the children as `.swc`, deletes the parent (the commit), renames the children to
/// `.swb`; each step durable before the next when `fsync`. Stops after `until`. If a child
/// cannot be written, the `.swc` files are deleted and the parent stays as it was.
fn commit_split(
    dir: &Path,
    parent: &Path,
    children: &[(PathBuf, Vec<u8>)],
    fsync: bool,
    until: SplitStep,
) -> std::io::Result<()> {
    let uncommitted = |p: &PathBuf| p.with_extension("swc");
    for (k, (path, data)) in children.iter().enumerate() {
        if let Err(e) = write_file(dir, path, "swc", data, fsync) {
            for (p, _) in children {
                let _ = std::fs::remove_file(uncommitted(p));
            }
            return Err(e);
        }
        if k == 0 && until == SplitStep::FirstChild {
            return Ok(());
        }
    }
    if until == SplitStep::BothChildren {
        return Ok(());
    }
    std::fs::remove_file(parent)?;
    if fsync {
        sync_dir(dir)?;
    }
    for (k, (path, _)) in children.iter().enumerate() {
        if (k == 0 && until == SplitStep::ParentDeleted)
            || (k == 1 && until == SplitStep::FirstRenamed)
        {
            return Ok(());
        }
        std::fs::rename(uncommitted(path), path)?;
    }
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(spans: u32) -> Counts {
        Counts {
            spans,
            aggregated: u64::from(spans) * 10,
        }
    }

    fn opts(max_bytes: u64, when_full: WhenFull) -> Options {
        Options {
            max_bytes,
            when_full,
            ..Options::default()
        }
    }

    fn open(dir: &Path, max: u64, when_full: WhenFull) -> (Spool, Arc<Metrics>) {
        let m: Arc<Metrics> = Arc::default();
        (
            Spool::open(dir, opts(max, when_full), m.clone()).unwrap(),
            m,
        )
    }

    #[test]
    fn a_second_spool_on_the_same_directory_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = open(dir.path(), u64::MAX, WhenFull::DropOldest);
        let Err(err) = Spool::open(dir.path(), Options::default(), Arc::default()) else {
            panic!("a second spool opened a locked directory");
        };
        assert!(err.to_string().contains("--spool-dir"), "{err}");
        drop(first);
        open(dir.path(), u64::MAX, WhenFull::DropOldest);
    }

    #[tokio::test]
    async fn replays_in_order_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
            for n in 0..5u8 {
                s.push(&[n; 10], kept(u32::from(n)), Compression::Zstd)
                    .await
                    .unwrap();
            }
            let first = s.next().await;
            assert_eq!(s.read(&first).await.unwrap(), vec![0; 10]);
            s.remove(&first);
        }
        let (s, m) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
        assert_eq!(m.spool_batches.load(Relaxed), 4);
        s.push(&[9; 10], kept(9), Compression::Gzip).await.unwrap();
        let mut seen = Vec::new();
        while let Some(e) = s.peek() {
            seen.push(s.read(&e).await.unwrap()[0]);
            s.remove(&e);
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 9]);
        assert_eq!(s.usage(), (0, 0));
    }

    #[tokio::test]
    async fn full_spool_drops_oldest_and_counts_spans() {
        let dir = tempfile::tempdir().unwrap();
        let (s, m) = open(dir.path(), 1000, WhenFull::DropOldest);
        for n in 0..5u8 {
            s.push(&[n; 267], kept(7), Compression::None).await.unwrap(); // 300 bytes each
        }
        assert_eq!(s.usage(), (3, 900));
        assert_eq!(m.dropped_count(DropReason::SpoolFull), 14);
        assert_eq!(m.aggregated_dropped_count(DropReason::SpoolFull), 140);
        let e = s.peek().unwrap();
        assert_eq!(s.read(&e).await.unwrap()[0], 2);
        assert!(matches!(
            s.push(&[0; 2000], kept(1), Compression::None).await,
            Err(PushError::TooBig(_))
        ));
    }

    #[tokio::test]
    async fn full_spool_blocks_until_space() {
        let dir = tempfile::tempdir().unwrap();
        let (s, m) = open(dir.path(), 1000, WhenFull::Block);
        let s = Arc::new(s);
        for n in 0..3u8 {
            s.push(&[n; 267], kept(1), Compression::None).await.unwrap();
        }
        let s2 = s.clone();
        let writer =
            tokio::spawn(async move { s2.push(&[7; 267], kept(1), Compression::None).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !writer.is_finished(),
            "push must wait while the spool is full"
        );
        let e = s.peek().unwrap();
        s.remove(&e);
        writer.await.unwrap().unwrap();
        assert_eq!(s.usage().0, 3);
        assert_eq!(m.dropped_count(DropReason::SpoolFull), 0);
    }

    #[tokio::test]
    async fn split_children_take_the_parents_place() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
        s.push(&[1; 10], kept(10), Compression::None).await.unwrap();
        s.push(&[2; 10], kept(10), Compression::None).await.unwrap();
        let e = s.peek().unwrap();
        s.split(&e, [(vec![11; 5], kept(5)), (vec![12; 5], kept(5))])
            .await
            .unwrap();
        let e = s.peek().unwrap();
        s.split(&e, [(vec![21; 2], kept(2)), (vec![22; 3], kept(3))])
            .await
            .unwrap();
        drop(s);
        let (s, _) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
        let mut seen = Vec::new();
        while let Some(e) = s.peek() {
            seen.push(s.read(&e).await.unwrap()[0]);
            s.remove(&e);
        }
        assert_eq!(seen, vec![21, 22, 12, 2]);
    }

    #[tokio::test]
    async fn dead_letters_leave_the_queue_and_the_oldest_go_beyond_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let m: Arc<Metrics> = Arc::default();
        let o = Options {
            // Room for two 300-byte batches and their notes, not three.
            dead_letter_max_bytes: 1000,
            ..opts(1 << 20, WhenFull::DropOldest)
        };
        let s = Spool::open(dir.path(), o, m.clone()).unwrap();
        for n in 0..4u8 {
            s.push(&[n; 267], kept(1), Compression::None).await.unwrap();
        }
        let why = Refusal {
            status: 400,
            error: "bad trace id".into(),
            field: "spans[0].trace_id".into(),
        };
        for _ in 0..3 {
            let e = s.peek().unwrap();
            let kept = s.dead_letter(&e, &why).unwrap();
            assert!(kept.starts_with(dir.path().join(DEAD_LETTER_DIR)));
        }
        // The queue moved on to the fourth batch.
        let e = s.peek().unwrap();
        assert_eq!(s.read(&e).await.unwrap()[0], 3);
        assert_eq!(s.usage(), (1, 300));
        let mut left: Vec<_> = std::fs::read_dir(s.dead_letter_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        let firsts: Vec<u8> = left
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "swb"))
            .map(|p| std::fs::read(p).unwrap()[HEADER])
            .collect();
        assert_eq!(firsts, vec![1, 2], "the oldest dead letter went first");
        let note = std::fs::read_to_string(left[0].with_extension("json")).unwrap();
        assert!(note.contains("spans[0].trace_id"), "{note}");
        assert_eq!(m.dead_letter_batches.load(Relaxed), 3);
        assert_eq!(m.dead_letter_files.load(Relaxed), 2);
        let held: u64 = left.iter().map(|p| p.metadata().unwrap().len()).sum();
        assert_eq!(m.dead_letter_bytes.load(Relaxed), held);
        // The count limit holds too, and a reopened spool reports what is held.
        assert_eq!(prune(&s.dead_letter_dir(), u64::MAX, 1).0, 1);
        drop(s);
        let m: Arc<Metrics> = Arc::default();
        let _s = Spool::open(dir.path(), Options::default(), m.clone()).unwrap();
        assert_eq!(m.dead_letter_files.load(Relaxed), 1);
    }

    /// The batch files and `.json` notes in `dir/sub`, sorted.
    fn held(dir: &Path, sub: &str) -> (Vec<PathBuf>, Vec<String>) {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let notes = files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        files.retain(|p| p.extension().is_some_and(|x| x == "swb"));
        (files, notes)
    }

    /// The batch files in the spool directory, oldest first.
    fn batch_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "swb"))
            .collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn corrupt_files_are_quarantined_at_open_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
            for n in 0..6u8 {
                s.push(&[n; 100], kept(u32::from(n) + 1), Compression::None)
                    .await
                    .unwrap();
            }
        }
        let files = batch_files(dir.path());
        let edit = |i: usize, f: &dyn Fn(&mut Vec<u8>)| {
            let mut d = std::fs::read(&files[i]).unwrap();
            f(&mut d);
            std::fs::write(&files[i], d).unwrap();
        };
        edit(0, &|d| d.truncate(d.len() - 1)); // torn write: length mismatch
        edit(1, &|d| d[HEADER + 50] ^= 1); // a bit flipped in the body: CRC mismatch
        edit(2, &|d| d[0] = b'X'); // not a spool file
        edit(3, &|d| d.truncate(5)); // shorter than a header
        edit(4, &|d| d[17] ^= 1); // a bit flipped in the kept-span count: header CRC
        let (s, m) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
        let e = s.peek().unwrap();
        assert_eq!(
            s.read(&e).await.unwrap(),
            vec![5; 100],
            "only the whole file is left"
        );
        assert_eq!(s.usage().0, 1);
        let (files, notes) = held(dir.path(), QUARANTINE_DIR);
        assert_eq!((files.len(), notes.len()), (5, 5));
        assert!(
            notes.iter().any(|n| n.contains("body checksum")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("header says")), "{notes:?}");
        assert_eq!(m.spool_quarantined.load(Relaxed), 5);
        // The spans of files whose header checked out (batches 0 and 1) are counted.
        assert_eq!(m.dropped_count(DropReason::SpoolCorrupt), 1 + 2);
        assert_eq!(
            m.aggregated_dropped_count(DropReason::SpoolCorrupt),
            10 + 20
        );
    }

    #[tokio::test]
    async fn a_file_corrupted_after_open_is_quarantined_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let (s, m) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
        s.push(&[1; 100], kept(4), Compression::None).await.unwrap();
        s.push(&[2; 100], kept(5), Compression::None).await.unwrap();
        let path = &batch_files(dir.path())[0];
        let mut d = std::fs::read(path).unwrap();
        d[HEADER] ^= 0x80;
        std::fs::write(path, d).unwrap();
        let e = s.peek().unwrap();
        assert!(matches!(
            s.read(&e).await,
            Err(ReadError::Corrupt(Corrupt::BodyCrc))
        ));
        assert_eq!(held(dir.path(), QUARANTINE_DIR).0.len(), 1);
        assert_eq!(m.dropped_count(DropReason::SpoolCorrupt), 4);
        assert_eq!(m.aggregated_dropped_count(DropReason::SpoolCorrupt), 40);
        let e = s.peek().unwrap();
        assert_eq!(s.read(&e).await.unwrap(), vec![2; 100], "the queue goes on");
    }

    #[tokio::test]
    async fn files_of_the_previous_format_are_replayed() {
        use stormwatch_model::{Aggregate, AggregateKey, Batch};
        let dir = tempfile::tempdir().unwrap();
        let key = AggregateKey {
            minute: 1_700_000_040,
            service: "shop".into(),
            class: stormwatch_model::DependencyClass::HttpServer,
            peer: String::new(),
            operation: "GET /".into(),
            status_class: "ok".into(),
        };
        let batch = Batch {
            aggregates: vec![
                Aggregate {
                    count: 30,
                    ..Aggregate::new(&key)
                },
                Aggregate {
                    count: 12,
                    ..Aggregate::new(&key)
                },
            ],
            ..Default::default()
        };
        let body = crate::shipper::encode_body(&batch, Compression::Zstd).unwrap();
        // As the previous version wrote it: SWB1, kept spans, compression, body.
        let mut old = b"SWB1".to_vec();
        old.extend_from_slice(&3u32.to_le_bytes());
        old.push(1);
        old.extend_from_slice(&body);
        std::fs::write(dir.path().join(format!("{:020}.00.swb", 5u64 << 20)), &old).unwrap();
        // And one whose body does not decode.
        let mut bad = old[..HEADER_V1].to_vec();
        bad.extend_from_slice(b"not zstd at all");
        std::fs::write(dir.path().join(format!("{:020}.00.swb", 6u64 << 20)), &bad).unwrap();
        let (s, m) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
        assert_eq!(m.spool_quarantined.load(Relaxed), 1);
        let e = s.peek().unwrap();
        assert_eq!((e.spans, e.aggregated), (3, 42));
        assert_eq!(e.compression, Compression::Zstd);
        assert_eq!(s.read(&e).await.unwrap(), body);
        s.remove(&e);
        // New batches are written in the new format, after the old ones.
        s.push(&[7; 10], kept(1), Compression::None).await.unwrap();
        let e = s.peek().unwrap();
        assert!(e.ordinal > 5 << 20);
        assert_eq!(&std::fs::read(s.path(&e)).unwrap()[..4], MAGIC);
    }

    #[tokio::test]
    async fn a_split_killed_at_any_step_keeps_each_span_once() {
        use SplitStep::*;
        for (step, torn) in [
            (FirstChild, true),
            (FirstChild, false),
            (BothChildren, false),
            (ParentDeleted, false),
            (FirstRenamed, false),
            (Done, false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            {
                let (s, _) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
                s.push(&[1; 10], kept(10), Compression::None).await.unwrap();
                s.push(&[2; 10], kept(10), Compression::None).await.unwrap();
                let e = s.peek().unwrap();
                let halves = [(vec![11; 5], kept(5)), (vec![12; 5], kept(5))];
                s.split_until(&e, halves, step).await.unwrap();
                if torn {
                    // Killed while writing the first child: part of it on disk.
                    let swc = dir.path().join(format!("{:020}.01.swc", e.ordinal));
                    let d = std::fs::read(&swc).unwrap();
                    std::fs::write(&swc, &d[..HEADER + 2]).unwrap();
                }
            } // killed here: the spool is gone with whatever files the steps left
            let (s, m) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
            let mut seen = Vec::new();
            let mut spans = 0;
            while let Some(e) = s.peek() {
                seen.push(s.read(&e).await.unwrap()[0]);
                spans += e.spans;
                s.remove(&e);
            }
            let committed = step >= ParentDeleted;
            let want = if committed {
                vec![11, 12, 2]
            } else {
                vec![1, 2]
            };
            assert_eq!(seen, want, "killed after {step:?} (torn: {torn})");
            assert_eq!(spans, 20, "killed after {step:?}");
            assert_eq!(m.spool_quarantined.load(Relaxed), 0);
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".swc"))
                .collect();
            assert!(left.is_empty(), "{left:?} after {step:?}");
        }
    }

    #[tokio::test]
    async fn disk_full_with_drop_oldest_evicts_and_retries_once() {
        let dir = tempfile::tempdir().unwrap();
        let (s, m) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
        for n in 0..3u8 {
            s.push(&[n; 10], kept(1), Compression::None).await.unwrap();
        }
        s.fail_writes.store(1, Relaxed);
        s.push(&[3; 10], kept(2), Compression::None).await.unwrap();
        assert_eq!(m.spool_write_errors.load(Relaxed), 1);
        assert_eq!(m.dropped_count(DropReason::SpoolFull), 1, "the oldest went");
        assert_eq!(m.aggregated_dropped_count(DropReason::SpoolFull), 10);
        // Fails again after the eviction: the batch is not stored, one eviction only.
        s.fail_writes.store(2, Relaxed);
        assert!(matches!(
            s.push(&[4; 10], kept(2), Compression::None).await,
            Err(PushError::Io(e)) if e.raw_os_error() == Some(28)
        ));
        assert_eq!(m.dropped_count(DropReason::SpoolFull), 2);
        let mut seen = Vec::new();
        while let Some(e) = s.peek() {
            seen.push(s.read(&e).await.unwrap()[0]);
            s.remove(&e);
        }
        assert_eq!(seen, vec![2, 3]);
    }

    #[tokio::test]
    async fn disk_full_with_block_waits_for_the_shipper() {
        let dir = tempfile::tempdir().unwrap();
        let (s, m) = open(dir.path(), 1 << 20, WhenFull::Block);
        let s = Arc::new(s);
        s.push(&[1; 10], kept(1), Compression::None).await.unwrap();
        s.fail_writes.store(1, Relaxed);
        let s2 = s.clone();
        let writer =
            tokio::spawn(async move { s2.push(&[2; 10], kept(1), Compression::None).await });
        // The write was tried and failed.
        while m.spool_write_errors.load(Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        // The shipper sends the oldest: the waiting push goes on.
        let e = s.peek().unwrap();
        s.remove(&e);
        writer.await.unwrap().unwrap();
        let e = s.peek().unwrap();
        assert_eq!(s.read(&e).await.unwrap(), vec![2; 10]);
        assert_eq!(m.dropped_count(DropReason::SpoolFull), 0, "nothing dropped");
    }
}
