//! The disk spool: every batch is written here before it is sent, and deleted once the
//! collector accepted (or definitively refused) it.
//!
//! Writing first and sending from the spool gives one path for the normal case and for an
//! outage: batches leave in the order they were built, a crash or restart loses nothing that
//! was written, and replays after recovery are in order. A batch file holds exactly the body
//! that is POSTed (already compressed), behind a 9-byte header, so replay needs no re-encoding.
//!
//! File names are `{ordinal:020}.{level:02}.swb`. A batch the collector found too big (413) is
//! split in two children that take the two halves of the parent's ordinal range
//! (`2^(20-level)` wide), so the children sort exactly where the parent was.
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

const MAGIC: &[u8; 4] = b"SWB1";
const HEADER: usize = 9;
/// Ordinals of consecutive batches are this far apart, leaving room for 20 levels of splits.
const STRIDE_BITS: u32 = 20;
/// Where batches the collector refused for good are kept, under the spool directory.
pub const DEAD_LETTER_DIR: &str = "dead-letter";
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
}

impl Options {
    pub fn of(sh: &Shipping) -> Options {
        Options {
            max_bytes: sh.spool_max_bytes,
            when_full: sh.when_full,
            dead_letter_max_bytes: sh.dead_letter_max_bytes,
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
    pub spans: u32,
    pub bytes: u64,
    pub compression: Compression,
}

impl Entry {
    fn file_name(&self) -> String {
        format!("{:020}.{:02}.swb", self.ordinal, self.level)
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
}

enum Reserve {
    Write(Entry),
    Dropped,
    Wait,
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
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            let Some(stem) = name.strip_suffix(".swb") else {
                continue;
            };
            let Some((ord, level)) = stem.split_once('.') else {
                continue;
            };
            let (Ok(ordinal), Ok(level)) = (ord.parse::<u64>(), level.parse::<u8>()) else {
                continue;
            };
            let mut header = [0u8; HEADER];
            let ok = std::fs::File::open(item.path())
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
                .is_ok();
            let compression = compression_of(header[8]);
            if !ok || &header[..4] != MAGIC || compression.is_none() {
                tracing::error!(file = %item.path().display(), "unreadable spool file removed");
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            entries.push(Entry {
                ordinal,
                level,
                spans: u32::from_le_bytes(header[4..8].try_into().unwrap_or([0; 4])),
                bytes: item.metadata()?.len(),
                compression: compression.unwrap_or_default(),
            });
        }
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
        };
        spool.publish(&spool.lock());
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
        spans: u32,
        compression: Compression,
    ) -> Result<(), PushError> {
        let size = (body.len() + HEADER) as u64;
        loop {
            let waiter = self.freed.notified();
            match self.reserve(size)? {
                Reserve::Write(mut entry) => {
                    entry.spans = spans;
                    entry.compression = compression;
                    if let Err(e) = self.write(&entry, body).await {
                        self.lock().bytes -= size;
                        return Err(e.into());
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
                bytes: size,
                compression: Compression::None,
            }));
        }
        if i.opts.when_full == WhenFull::Block {
            return Ok(Reserve::Wait);
        }
        let in_flight = i.in_flight;
        let Some(pos) = i.entries.iter().position(|e| Some(e.ordinal) != in_flight) else {
            // Only the in-flight batch is left and it alone is too much with this one.
            return Err(PushError::TooBig(size));
        };
        let Some(e) = i.entries.remove(pos) else {
            return Ok(Reserve::Dropped);
        };
        i.bytes -= e.bytes;
        self.publish(&i);
        drop(i);
        let _ = std::fs::remove_file(self.path(&e));
        self.metrics
            .dropped(DropReason::SpoolFull, u64::from(e.spans));
        tracing::error!(
            spans = e.spans,
            bytes = e.bytes,
            "spool full: dropped the oldest batch"
        );
        Ok(Reserve::Dropped)
    }

    async fn write(&self, e: &Entry, body: &[u8]) -> std::io::Result<()> {
        let mut data = Vec::with_capacity(body.len() + HEADER);
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&e.spans.to_le_bytes());
        data.push(compression_byte(e.compression));
        data.extend_from_slice(body);
        let path = self.path(e);
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, &data).await?;
        tokio::fs::rename(&tmp, &path).await
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

    /// Reads a batch's body.
    pub async fn read(&self, e: &Entry) -> std::io::Result<Vec<u8>> {
        let mut data = tokio::fs::read(self.path(e)).await?;
        if data.len() < HEADER || &data[..4] != MAGIC {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a spool file",
            ));
        }
        data.drain(..HEADER);
        Ok(data)
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
    /// folder, as `{unix ns}-{file name}` (names sort oldest first and never collide with a
    /// dead letter of an earlier run, whose ordinals may repeat) beside a `.json` note of the
    /// refusal; then deletes the oldest dead letters beyond the limits. Returns the path kept.
    /// When the move fails the batch is deleted: the queue must go on either way.
    pub fn dead_letter(&self, e: &Entry, why: &Refusal) -> std::io::Result<PathBuf> {
        self.forget(e);
        self.freed.notify_waiters();
        let name = format!("{:020}-{}", crate::util::now_ns(), e.file_name());
        let to = self.dead_letter_dir().join(&name);
        let moved = std::fs::rename(self.path(e), &to).and_then(|()| {
            let note = serde_json::json!({
                "status": why.status,
                "error": why.error,
                "field": why.field,
                "spans": e.spans,
                "compression": format!("{:?}", e.compression).to_lowercase(),
                "at_unix_ns": crate::util::now_ns(),
            });
            std::fs::write(to.with_extension("json"), format!("{note:#}\n"))
        });
        if let Err(error) = moved {
            let _ = std::fs::remove_file(self.path(e));
            let _ = std::fs::remove_file(&to);
            return Err(error);
        }
        self.metrics.dead_letter_batches.fetch_add(1, Relaxed);
        self.prune_dead_letters();
        Ok(to)
    }

    /// Deletes the oldest dead letters beyond the limits and publishes what is left.
    fn prune_dead_letters(&self) {
        let max = self.lock().opts.dead_letter_max_bytes;
        let (files, bytes) = prune(&self.dead_letter_dir(), max, DEAD_LETTER_MAX_FILES);
        self.metrics.dead_letter_files.store(files, Relaxed);
        self.metrics.dead_letter_bytes.store(bytes, Relaxed);
    }

    /// Replaces `e` by two halves (bodies already encoded), in its place in the order.
    pub async fn split(&self, e: &Entry, halves: [(Vec<u8>, u32); 2]) -> Result<(), PushError> {
        if u32::from(e.level) >= STRIDE_BITS {
            return Err(PushError::TooBig(e.bytes));
        }
        let half = 1u64 << (STRIDE_BITS - 1 - u32::from(e.level));
        let mut children = Vec::new();
        for (k, (body, spans)) in halves.iter().enumerate() {
            let c = Entry {
                ordinal: e.ordinal + k as u64 * half,
                level: e.level + 1,
                spans: *spans,
                bytes: (body.len() + HEADER) as u64,
                compression: e.compression,
            };
            self.write(&c, body).await?;
            children.push(c);
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
        drop(i);
        // The parent's file has the same ordinal as the first child but another level.
        let _ = std::fs::remove_file(self.path(e));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                s.push(&[n; 10], u32::from(n), Compression::Zstd)
                    .await
                    .unwrap();
            }
            let first = s.next().await;
            assert_eq!(s.read(&first).await.unwrap(), vec![0; 10]);
            s.remove(&first);
        }
        let (s, m) = open(dir.path(), 1 << 20, WhenFull::DropOldest);
        assert_eq!(m.spool_batches.load(Relaxed), 4);
        s.push(&[9; 10], 9, Compression::Gzip).await.unwrap();
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
            s.push(&[n; 291], 7, Compression::None).await.unwrap(); // 300 bytes each
        }
        assert_eq!(s.usage(), (3, 900));
        assert_eq!(m.dropped_count(DropReason::SpoolFull), 14);
        let e = s.peek().unwrap();
        assert_eq!(s.read(&e).await.unwrap()[0], 2);
        assert!(matches!(
            s.push(&[0; 2000], 1, Compression::None).await,
            Err(PushError::TooBig(_))
        ));
    }

    #[tokio::test]
    async fn full_spool_blocks_until_space() {
        let dir = tempfile::tempdir().unwrap();
        let (s, m) = open(dir.path(), 1000, WhenFull::Block);
        let s = Arc::new(s);
        for n in 0..3u8 {
            s.push(&[n; 291], 1, Compression::None).await.unwrap();
        }
        let s2 = s.clone();
        let writer = tokio::spawn(async move { s2.push(&[7; 291], 1, Compression::None).await });
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
        s.push(&[1; 10], 10, Compression::None).await.unwrap();
        s.push(&[2; 10], 10, Compression::None).await.unwrap();
        let e = s.peek().unwrap();
        s.split(&e, [(vec![11; 5], 5), (vec![12; 5], 5)])
            .await
            .unwrap();
        let e = s.peek().unwrap();
        s.split(&e, [(vec![21; 2], 2), (vec![22; 3], 3)])
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
            s.push(&[n; 291], 1, Compression::None).await.unwrap();
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
}
