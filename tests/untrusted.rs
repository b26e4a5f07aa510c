//! Bytes another process wrote into a segment are untrusted (issue 15): a
//! lock's words are numbers a locker checks, never pointers it follows, so
//! forged lock bytes make a lock look held by someone dead — it is taken
//! over and reported — and never make a process write through them or
//! crash.

mod common;

ipckit::test_support!();

use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::queue::Queue;
use ipckit::sync::{Event, LockError, Mutex};

/// Where a `Mutex<u64>`'s lock lies in its segment: right after the
/// 128-byte header (as `ipckit inspect` finds it).
const LOCK_AT: usize = 128;
/// A lock's bytes: holder word, flag, padding, the sleepers' cell.
const LOCK_LEN: usize = 32;

/// Takes the lock (expecting it to be taken over from a forged holder),
/// returning how long that took.
fn lock_taken_over(m: &Mutex<u64>) -> (u64, Duration) {
    let t = Instant::now();
    match m.lock_timeout(Duration::from_secs(10)) {
        Err(LockError::OwnerDied(g)) => {
            let v = *g;
            g.mark_consistent();
            (v, t.elapsed())
        }
        Ok(_) => panic!("a forged holder was not reported"),
        Err(e) => panic!("the lock was not recovered: {e}"),
    }
}

/// Holds the lock until `go`, then writes 8 and unlocks — by then its lock
/// words were overwritten, so its unlock must write nothing.
fn child_hold_through_forgery((m, ready, go): (Mutex<u64>, Event, Event)) -> u64 {
    let mut g = m.lock().unwrap();
    ready.set();
    go.wait_timeout(Duration::from_secs(30)).unwrap();
    *g = 8;
    drop(g);
    // The lock is usable afterwards by its victim too.
    match m.lock() {
        Ok(g) => *g,
        Err(LockError::OwnerDied(g)) => *g,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn forged_lock_bytes_under_a_holder_are_taken_over_not_followed() {
    let ctx = Ctx::new("forged_lock");
    let name = ctx.name("m");
    let m = Mutex::create(&name, 7u64).unwrap();
    let (ready, go) = (Event::new().unwrap(), Event::new().unwrap());
    let child = spawn(
        child_hold_through_forgery,
        (m.clone(), ready.clone(), go.clone()),
    );
    ready.wait_timeout(Duration::from_secs(30)).unwrap();
    // Every byte of the lock overwritten while the child holds it: the
    // holder word names thread 0x41414141, which cannot exist; the
    // sleepers' cell counts a billion sleepers.
    m.segment().write_at(LOCK_AT, &[0x41; LOCK_LEN]).unwrap();
    let (v, took) = lock_taken_over(&m);
    assert_eq!(v, 7);
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The victim's unlock, with the words no longer naming it, writes
    // nothing; it can lock again afterwards.
    go.set();
    assert_eq!(child.join().unwrap(), 8);
    for _ in 0..1000 {
        *m.lock().unwrap() += 1;
    }
    assert_eq!(*m.lock().unwrap(), 1008);
}

/// Says it runs, then waits for `go`.
fn child_wait((ready, go): (Event, Event)) {
    ready.set();
    go.wait_timeout(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_holder_word_naming_a_live_thread_of_another_process_is_taken_over() {
    let ctx = Ctx::new("recycled_tid");
    let name = ctx.name("m");
    let m = Mutex::create(&name, 7u64).unwrap();
    // A live process that holds nothing: its pid is its main thread's id,
    // so the word names a running thread, but with the wrong process tag
    // (what a recycled thread id looks like).
    let ready = Event::new().unwrap();
    let go = Event::new().unwrap();
    let sleeper = spawn(child_wait, (ready.clone(), go.clone()));
    ready.wait_timeout(Duration::from_secs(30)).unwrap();
    let word = (u64::from(sleeper.pid()) << 32) | 0x0000_0002;
    m.segment().write_at(LOCK_AT, &word.to_le_bytes()).unwrap();
    // Not found by the cheap check (the thread exists) but by the full one.
    assert!(m.try_lock().unwrap_err().is_would_block());
    let (v, took) = lock_taken_over(&m);
    assert_eq!(v, 7);
    assert!(took < Duration::from_secs(5), "{took:?}");
    go.set();
    sleeper.join().unwrap();
}

/// Gives the `/dev/shm` object `name` to user `nobody` (65534), as if that
/// user had planted it; `false` if this process may not (not root).
fn give_away(name: &str) -> bool {
    match std::os::unix::fs::chown(format!("/dev/shm/{name}"), Some(65534), Some(65534)) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: cannot chown a /dev/shm object to another user here ({e})");
            false
        }
        Err(e) => panic!("chown: {e}"),
    }
}

#[test]
fn objects_of_another_user_are_refused_unless_asked_for() {
    use ipckit::queue::Queue;
    use ipckit::{CreationMode, ErrorKind, Segment};
    let ctx = Ctx::new("other_user");
    let name = ctx.name("q");
    // Planted: a queue under the name, owned by another user, mode 0666.
    let planted = Queue::<u64>::create(&name, 4096).unwrap();
    std::fs::set_permissions(
        format!("/dev/shm/{name}"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    if !give_away(&name) {
        return;
    }
    planted.put(&666).unwrap();
    let e = Segment::open(&name).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("belongs to user 65534"), "{e}");
    let e = Queue::<u64>::open(&name).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // The victim's open_or_create no longer silently uses it.
    let e = Queue::<u64>::open_or_create(&name, 4096).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // Asked for: opened.
    let seg = Segment::builder(&name)
        .creation_mode(CreationMode::OpenExisting)
        .allow_other_owners(true)
        .build()
        .unwrap();
    let q = Queue::<u64>::open_in(&seg, 0).unwrap();
    assert_eq!(q.get().unwrap(), 666);
}

/// What a `Segment` looks like on the wire (the crate's private token, same
/// variants in the same order), to forge one.
#[derive(serde::Serialize)]
#[allow(dead_code)]
enum ForgedToken {
    Named {
        name: String,
    },
    AnonymousFd {
        index: u32,
        len: u64,
    },
    Anonymous {
        pid: u32,
        fd: i32,
        dev: u64,
        ino: u64,
        len: u64,
    },
}

#[test]
fn a_segment_token_naming_a_descriptor_that_is_not_a_segment_is_refused() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let t = Ctx::new("forged_token");
    // A real anonymous segment's token opens (the positive control).
    let seg = ipckit::Segment::new(4096).unwrap();
    seg.write_at(0, b"real").unwrap();
    let bytes = ipckit::codec::encode(&seg).unwrap();
    let back: ipckit::Segment = ipckit::codec::decode(&bytes).unwrap();
    let mut b = [0u8; 4];
    back.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"real");
    // A file this process holds, named by a token that knows its identity:
    // decoding used to map it read-write as a segment.
    let path = std::env::temp_dir().join(t.name("victim"));
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&[b'v'; 4096]).unwrap();
    let meta = file.metadata().unwrap();
    let forged = |pid: u32, fd: i32, dev: u64, ino: u64, len: u64| {
        let token = ForgedToken::Anonymous {
            pid,
            fd,
            dev,
            ino,
            len,
        };
        let bytes = ipckit::codec::encode(&token).unwrap();
        ipckit::codec::decode::<ipckit::Segment>(&bytes)
    };
    let e = forged(
        std::process::id(),
        file.as_raw_fd(),
        meta.dev(),
        meta.ino(),
        meta.len(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not an anonymous segment"), "{e}");
    // Another process's descriptors (init's stdin, say) are not opened either.
    let e = forged(1, 0, 0, 0, 4096).unwrap_err();
    assert!(!e.to_string().is_empty());
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'v'; 4096]);
    std::fs::remove_file(&path).unwrap();
}

// ---------------------------------------------------------------------------
// Every word of every kind of object, overwritten
// ---------------------------------------------------------------------------

#[path = "support/forge.rs"]
mod forge;

use forge::{HEADER, KINDS, Object, PATTERNS, Rng, STATE_OFFSET};

/// How long each waiting operation may wait.
const STEP: Duration = Duration::from_millis(2);

/// In a child: for every 8-byte word of a `kind` object and every pattern,
/// a fresh object with that word overwritten is used through its open
/// handle, then opened afresh and used again. Returns (cases, the longest
/// single operation in µs).
fn child_forge_every_word(kind: usize) -> (u32, u64) {
    let len = Object::create(kind).1.len();
    let mut longest = Duration::ZERO;
    let mut cases = 0;
    for at in (0..len).step_by(8) {
        // A state word that is not "ready" is an object still being
        // created: opening waits for it (2 s), tested elsewhere.
        if at == STATE_OFFSET {
            continue;
        }
        for p in PATTERNS {
            let (obj, seg) = Object::create(kind);
            forge::forge(&seg, at, 8, p);
            longest = longest.max(obj.exercise(STEP));
            if let Some(again) = Object::open(kind, &seg) {
                longest = longest.max(again.exercise(STEP));
            }
            cases += 1;
        }
    }
    (cases, longest.as_micros() as u64)
}

/// In a child: `rounds` objects of `kind`, each with 1–4 random words after
/// the header overwritten with random values (seeded), used and reopened.
fn child_forge_random_words((kind, seed, rounds): (usize, u64, u32)) -> u64 {
    let mut rng = Rng(seed);
    let mut longest = Duration::ZERO;
    for _ in 0..rounds {
        let (obj, seg) = Object::create(kind);
        let words = (seg.len() - HEADER) / 8;
        for _ in 0..=rng.next() % 4 {
            let at = HEADER + (rng.next() as usize % words) * 8;
            forge::forge(&seg, at, 8, rng.next());
        }
        longest = longest.max(obj.exercise(STEP));
        if let Some(again) = Object::open(kind, &seg) {
            longest = longest.max(again.exercise(STEP));
        }
    }
    longest.as_micros() as u64
}

#[test]
fn every_word_of_every_kind_overwritten_gives_values_or_errors_in_time() {
    let _t = Ctx::with_limit("forge_every_word", Duration::from_secs(300));
    // One child per kind, all at once; a child that dies by a signal, or
    // panics, fails its join.
    let children: Vec<_> = (0..KINDS.len())
        .map(|k| spawn(child_forge_every_word, k))
        .collect();
    for (k, mut child) in children.into_iter().enumerate() {
        let (cases, longest_us) = child
            .join_timeout(Duration::from_secs(240))
            .unwrap_or_else(|e| panic!("{}: {e}", KINDS[k]));
        println!(
            "{}: {cases} forged words, longest operation {longest_us} us",
            KINDS[k]
        );
        assert!(cases > 0);
        assert!(
            longest_us < 2_000_000,
            "{}: an operation took {longest_us} us",
            KINDS[k]
        );
    }
}

#[test]
fn random_words_of_every_kind_overwritten_with_many_seeds() {
    let _t = Ctx::with_limit("forge_random", Duration::from_secs(300));
    let children: Vec<_> = (0..KINDS.len())
        .flat_map(|k| (0..8u64).map(move |seed| (k, seed)))
        .map(|(k, seed)| {
            (
                k,
                seed,
                spawn(child_forge_random_words, (k, 0x9e37 + seed * 7919, 400)),
            )
        })
        .collect();
    for (k, seed, mut child) in children {
        let longest_us = child
            .join_timeout(Duration::from_secs(240))
            .unwrap_or_else(|e| panic!("{} seed {seed}: {e}", KINDS[k]));
        assert!(
            longest_us < 2_000_000,
            "{} seed {seed}: an operation took {longest_us} us",
            KINDS[k]
        );
    }
}

/// Locks `m`, says so on `locked`, waits for a word on `go`, unlocks (its
/// object was overwritten meanwhile), again for each word that comes; the
/// rounds it managed.
fn child_hold_while_forged((m, locked, go): (Mutex<u64>, Queue<u32>, Queue<u32>)) -> u32 {
    let mut rounds = 0;
    loop {
        let g = match m.lock_timeout(Duration::from_secs(10)) {
            Ok(g) => g,
            Err(LockError::OwnerDied(g)) => {
                g.mark_consistent();
                g
            }
            Err(e) => panic!("round {rounds}: {e}"),
        };
        locked.put(&rounds).unwrap();
        let word = go.get_timeout(Duration::from_secs(30)).unwrap();
        drop(g);
        if word == u32::MAX {
            return rounds;
        }
        rounds += 1;
    }
}

#[test]
fn every_word_of_a_mutex_overwritten_while_another_process_holds_it() {
    let _t = Ctx::with_limit("forge_held", Duration::from_secs(300));
    let m = Mutex::new(3u64).unwrap();
    let (locked, go) = (
        Queue::<u32>::new(4096).unwrap(),
        Queue::<u32>::new(4096).unwrap(),
    );
    let mut child = spawn(
        child_hold_while_forged,
        (m.clone(), locked.clone(), go.clone()),
    );
    let len = m.segment().len();
    let mut longest = Duration::ZERO;
    let mut rounds = 0;
    for at in (HEADER..len).step_by(8) {
        for p in PATTERNS {
            locked.get_timeout(Duration::from_secs(30)).unwrap();
            forge::forge(m.segment(), at, 8, p);
            go.put(&0).unwrap();
            // While and after the child unlocks: values or errors, in time.
            let t = Instant::now();
            match m.lock_timeout(Duration::from_millis(50)) {
                Ok(g) => drop(g),
                Err(LockError::OwnerDied(g)) => g.mark_consistent(),
                Err(_) => {}
            }
            longest = longest.max(t.elapsed());
            rounds += 1;
        }
    }
    locked.get_timeout(Duration::from_secs(30)).unwrap();
    go.put(&u32::MAX).unwrap();
    let survived = child.join_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(survived, rounds, "the holder went through every round");
    assert!(longest < Duration::from_secs(2), "{longest:?}");
    // The object still works for both.
    *m.lock().unwrap() = 11;
    assert_eq!(*m.lock().unwrap(), 11);
}
