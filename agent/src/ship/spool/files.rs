//! File operations of the spool: its lock, durable writes, holding folders (dead letters,
//! quarantine) and the atomic commit of a split.

use std::path::{Path, PathBuf};

/// Takes `<dir>/spool.lock` (released when the process ends, however it ends).
pub(super) fn lock_dir(dir: &Path) -> std::io::Result<std::fs::File> {
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
pub(super) fn write_file(
    dir: &Path,
    path: &Path,
    tmp: &str,
    data: &[u8],
    fsync: bool,
) -> std::io::Result<()> {
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
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Moves a batch file into a holding folder (dead letters, quarantine) as
/// `{unix ns}-{file name}` (names sort oldest first and never collide with a file of an
/// earlier run, whose ordinals may repeat), beside `note` as `.json`.
pub(super) fn hold(from: &Path, dir: &Path, note: serde_json::Value) -> std::io::Result<PathBuf> {
    let name = from.file_name().unwrap_or_default().to_string_lossy();
    let to = dir.join(format!("{:020}-{name}", crate::util::now_ns()));
    std::fs::rename(from, &to)?;
    std::fs::write(to.with_extension("json"), format!("{note:#}\n"))?;
    Ok(to)
}

/// Keeps at most `max_bytes` and `max_files` batches in a holding folder (dead letters,
/// quarantine): deletes the oldest batch files (names sort by age) with their `.json` notes.
/// Returns the batch files and bytes (notes included) left.
pub(super) fn prune(dir: &Path, max_bytes: u64, max_files: usize) -> (u64, u64) {
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

/// The steps of a split's commit, in order; a kill can fall after any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SplitStep {
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
pub(super) fn commit_split(
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
