use super::format::{HEADER_V1, MAGIC};
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
    let writer = tokio::spawn(async move { s2.push(&[7; 267], kept(1), Compression::None).await });
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
    let body = crate::ship::body::encode_body(&batch, Compression::Zstd).unwrap();
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
    let writer = tokio::spawn(async move { s2.push(&[2; 10], kept(1), Compression::None).await });
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
