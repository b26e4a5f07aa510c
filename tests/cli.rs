//! The `ipckit` command-line tool, run as a binary against objects made by
//! real processes: stale objects of SIGKILLed creators are found and
//! removed, live and still-used objects are kept, foreign files are left
//! alone, corrupt headers are reported, queues are inspected and watched.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Ctx, eventually, spawn};
use ipckit::queue::Queue;
use ipckit::sync::{Event, LockError, Mutex};
use ipckit::{Segment, Value};

ipckit::test_support!();

/// Runs the tool; returns (exit code, stdout, stderr).
fn ipckit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ipckit"))
        .args(args)
        .output()
        .expect("run ipckit");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

/// Runs the tool and expects success; returns stdout.
fn ok(args: &[&str]) -> String {
    let (code, out, err) = ipckit(args);
    assert_eq!(code, 0, "ipckit {args:?} failed: {err}\n{out}");
    out
}

/// The line of `ls --json` output that describes `name`.
fn json_line<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"name\":\"{name}\",");
    json.lines().find(|l| l.contains(&key))
}

fn exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

const WAIT: Duration = Duration::from_secs(20);

// -- children ------------------------------------------------------------------

/// Creates a queue, a value and a mutex under `names`, says so, then waits
/// to be killed (its handles never drop, so the names stay).
fn create_and_wait((names, ready): (Vec<String>, Event)) {
    let q = Queue::<u32>::create(&names[0], 4096).unwrap();
    q.put(&7).unwrap();
    let v = Value::create(&names[1], 5u64).unwrap();
    let m = Mutex::create(&names[2], 0u32).unwrap();
    ready.set();
    std::thread::sleep(Duration::from_secs(3600));
    drop((q, v, m));
}

/// Creates one value and waits to be killed.
fn create_value_and_wait((name, ready): (String, Event)) {
    let v = Value::create(&name, 1u64).unwrap();
    ready.set();
    std::thread::sleep(Duration::from_secs(3600));
    drop(v);
}

/// Maps the object `name` (whatever it is) and holds it.
fn hold((name, ready): (String, Event)) {
    let s = Segment::open(&name).unwrap();
    ready.set();
    std::thread::sleep(Duration::from_secs(3600));
    drop(s);
}

/// Puts into a full queue: blocks holding the producer lock.
fn put_into_full(q: Queue<u32>) {
    q.put(&99).unwrap();
}

/// Locks the mutex and keeps it.
fn lock_and_wait((m, ready): (Mutex<u32>, Event)) {
    let guard = m.lock().unwrap();
    ready.set();
    std::thread::sleep(Duration::from_secs(3600));
    drop(guard);
}

// -- tests ---------------------------------------------------------------------

#[test]
fn objects_of_a_killed_creator_are_stale_and_cleaned() {
    let ctx = Ctx::new("cli_stale");
    let base = ctx.name("base");
    let names: Vec<String> = ["queue", "value", "mutex"]
        .iter()
        .map(|t| format!("{base}-{t}"))
        .collect();
    let ready = Event::new().unwrap();
    let p = spawn(create_and_wait, (names.clone(), ready.clone()));
    ready.wait_timeout(WAIT).unwrap();
    let creator = p.pid();
    p.kill().unwrap();
    assert!(p.join().is_err());

    let json = ok(&["ls", "--json"]);
    for (name, kind) in names.iter().zip(["Queue", "Value", "Mutex"]) {
        let line = json_line(&json, name).unwrap_or_else(|| panic!("{name} not listed:\n{json}"));
        assert!(line.contains(&format!("\"kind\":\"{kind}\"")), "{line}");
        assert!(line.contains("\"status\":\"stale\""), "{line}");
        assert!(
            line.contains(&format!("\"creator_pid\":{creator},")),
            "{line}"
        );
        assert!(line.contains("\"creator_alive\":false"), "{line}");
        assert!(line.contains("\"users\":[]"), "{line}");
    }
    let table = ok(&["ls"]);
    let row = table.lines().find(|l| l.starts_with(&names[0])).unwrap();
    assert!(
        row.contains(&format!("{creator} dead")) && row.ends_with("stale"),
        "{row}"
    );

    // A dry run reports all three and removes nothing.
    let dry = ok(&["clean", "--stale", "--dry-run", "--prefix", &base]);
    for name in &names {
        assert!(dry.contains(&format!("would remove {name} (")), "{dry}");
        assert!(exists(name), "the dry run removed {name}");
    }
    assert!(dry.ends_with("3 stale objects found\n"), "{dry}");

    let done = ok(&["clean", "--stale", "--prefix", &base]);
    for name in &names {
        assert!(done.contains(&format!("removed {name} (")), "{done}");
        assert!(!exists(name), "{name} is still there");
    }
    assert!(done.ends_with("3 stale objects removed\n"), "{done}");
    // Nothing is left to clean.
    let again = ok(&["clean", "--stale", "--prefix", &base]);
    assert_eq!(again, "0 stale objects removed\n");
}

#[test]
fn live_and_still_used_objects_are_kept() {
    let ctx = Ctx::new("cli_kept");
    let base = ctx.name("base");
    let alive = format!("{base}-alive");
    let held = format!("{base}-held");
    // Created by this (live) process.
    let mine = Value::create(&alive, 3u32).unwrap();
    // Created by a child that is then killed, but mapped by a second child.
    let ready = Event::new().unwrap();
    let creator = spawn(create_value_and_wait, (held.clone(), ready.clone()));
    ready.wait_timeout(WAIT).unwrap();
    let ready2 = Event::new().unwrap();
    let holder = spawn(hold, (held.clone(), ready2.clone()));
    ready2.wait_timeout(WAIT).unwrap();
    creator.kill().unwrap();
    assert!(creator.join().is_err());

    let json = ok(&["ls", "--json"]);
    let line = json_line(&json, &alive).unwrap();
    assert!(
        line.contains("\"status\":\"live\"") && line.contains("\"creator_alive\":true"),
        "{line}"
    );
    let line = json_line(&json, &held).unwrap();
    assert!(line.contains("\"status\":\"orphaned\""), "{line}");
    assert!(line.contains("\"creator_alive\":false"), "{line}");
    assert!(
        line.contains(&format!("\"users\":[{}]", holder.pid())),
        "{line}"
    );

    let out = ok(&["clean", "--stale", "--prefix", &base]);
    assert_eq!(out, "0 stale objects removed\n");
    assert!(exists(&alive) && exists(&held));

    // `rm` refuses both without --force, and says why.
    let (code, _, err) = ipckit(&["rm", &held]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "cannot remove \"{held}\": it is in use by process {}",
            holder.pid()
        )),
        "{err}"
    );
    let (code, _, err) = ipckit(&["rm", &alive]);
    assert_eq!(code, 1);
    assert!(err.contains("in use by process"), "{err}");
    assert!(exists(&alive) && exists(&held));

    // Once the holder is gone the object is stale and cleaned.
    holder.kill().unwrap();
    assert!(holder.join().is_err());
    let out = ok(&["clean", "--stale", "--prefix", &base]);
    assert!(out.contains(&format!("removed {held} (Value")), "{out}");
    assert!(!exists(&held));
    assert!(exists(&alive));
    drop(mine);
    assert!(!exists(&alive));
}

#[test]
fn foreign_files_are_listed_only_with_all_and_never_cleaned() {
    let ctx = Ctx::new("cli_foreign");
    let base = ctx.name("base");
    let foreign = format!("{base}-foreign");
    let stale = format!("{base}-stale");
    std::fs::write(
        Path::new("/dev/shm").join(&foreign),
        b"not an ipckit object",
    )
    .unwrap();
    // A raw Segment has no header either: it is foreign to the tool.
    let raw_name = format!("{base}-raw");
    let raw = Segment::create(&raw_name, 4096).unwrap();
    raw.persist();
    drop(raw);
    let ready = Event::new().unwrap();
    let p = spawn(create_value_and_wait, (stale.clone(), ready.clone()));
    ready.wait_timeout(WAIT).unwrap();
    p.kill().unwrap();
    assert!(p.join().is_err());

    let json = ok(&["ls", "--json"]);
    assert!(json_line(&json, &foreign).is_none(), "{json}");
    assert!(json_line(&json, &raw_name).is_none(), "{json}");
    let all = ok(&["ls", "--all", "--json"]);
    for name in [&foreign, &raw_name] {
        let line = json_line(&all, name).unwrap_or_else(|| panic!("{name} not in --all:\n{all}"));
        assert!(
            line.contains("\"status\":\"foreign\"") && line.contains("\"ipckit\":false"),
            "{line}"
        );
    }
    assert!(
        ok(&["ls", "--all"])
            .lines()
            .any(|l| l.starts_with(&foreign) && l.ends_with("foreign"))
    );

    // Cleaning removes the stale object and leaves the foreign files.
    let out = ok(&["clean", "--stale", "--prefix", &base]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(&format!("removed {stale} (")), "{out}");
    assert!(exists(&foreign) && exists(&raw_name) && !exists(&stale));

    // Removing a foreign file takes --force.
    let (code, _, err) = ipckit(&["rm", &foreign]);
    assert_eq!(code, 1);
    assert!(
        err.contains("it is not an ipckit object; --force removes it anyway"),
        "{err}"
    );
    assert!(exists(&foreign));
    let out = ok(&["rm", "--force", &foreign, &raw_name]);
    assert_eq!(
        out,
        format!("removed {foreign} (-)\nremoved {raw_name} (-)\n")
    );
    assert!(!exists(&foreign) && !exists(&raw_name));
}

#[test]
fn corrupt_headers_are_reported_not_fatal() {
    use std::io::{Seek, SeekFrom, Write};
    let ctx = Ctx::new("cli_corrupt");
    let base = ctx.name("base");
    let name = format!("{base}-value");
    let v = Value::create(&name, 7u64).unwrap();
    // Overwrite the total-length field of the header.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(Path::new("/dev/shm").join(&name))
        .unwrap();
    f.seek(SeekFrom::Start(24)).unwrap();
    f.write_all(&[0xff; 8]).unwrap();
    drop(f);
    // A file that starts with the magic but is too short for a header.
    let short = format!("{base}-short");
    std::fs::write(Path::new("/dev/shm").join(&short), b"ipckit\0\x01tiny").unwrap();

    let table = ok(&["ls"]);
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(
        row.ends_with("corrupt: header checksum mismatch (corrupt header)"),
        "{row}"
    );
    let row = table.lines().find(|l| l.starts_with(&short)).unwrap();
    assert!(row.contains("corrupt: truncated header: 12 bytes"), "{row}");
    let json = ok(&["ls", "--json"]);
    let line = json_line(&json, &name).unwrap();
    assert!(
        line.contains("\"status\":\"corrupt\",\"corrupt\":\"header checksum mismatch"),
        "{line}"
    );

    let text = ok(&["inspect", &name]);
    assert!(
        text.contains("status:            corrupt: header checksum mismatch"),
        "{text}"
    );
    let j = ok(&["inspect", "--json", &name]);
    assert!(
        j.contains("\"status\":\"corrupt\"") && j.contains("\"header\":null"),
        "{j}"
    );

    // Corrupt objects are never stale (their creator is unknown) ...
    assert_eq!(
        ok(&["clean", "--stale", "--prefix", &base]),
        "0 stale objects removed\n"
    );
    assert!(exists(&name) && exists(&short));
    // ... but may be removed by name when nobody uses them.
    assert_eq!(ok(&["rm", &short]), format!("removed {short} (?)\n"));
    let (code, _, err) = ipckit(&["rm", &name]);
    assert_eq!(code, 1, "this process still maps it");
    assert!(err.contains("in use by process"), "{err}");
    drop(v);
    assert!(!exists(&name));
}

#[test]
fn inspect_shows_queue_state_and_dead_lock_owners() {
    let ctx = Ctx::new("cli_inspect");
    let name = ctx.name("queue");
    let q = Queue::<u32>::create(&name, 4096).unwrap();
    for i in 0..3 {
        q.put(&i).unwrap();
    }
    let j = ok(&["inspect", "--json", &name]);
    assert!(j.contains("\"kind\":\"Queue\""), "{j}");
    assert!(j.contains("\"capacity\":4096,"), "{j}");
    // Three frames of 8 header bytes + 1 payload byte, padded to 16.
    assert!(j.contains("\"items\":3,\"used_bytes\":48,"), "{j}");
    assert!(
        j.contains("\"messages_put\":3,\"messages_got\":0,\"closed\":false"),
        "{j}"
    );
    // Our process maps it; so, for an instant, may a CLI process that
    // another test runs meanwhile (`ls` and `clean` open every object).
    let users = j
        .split("\"users\":[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_default();
    assert!(
        users
            .split(',')
            .any(|u| u == std::process::id().to_string()),
        "{j}"
    );
    let text = ok(&["inspect", &name]);
    assert!(text.contains("items:             3\n"), "{text}");
    assert!(text.contains("producer lock:     free\n"), "{text}");

    // Fill the queue; a child's put then blocks holding the producer lock.
    let mut n = 3;
    while q.try_put(&n).is_ok() {
        n += 1;
    }
    let p = spawn(put_into_full, q.clone());
    let pid = p.pid();
    let owner = format!("\"owner_pid\":{pid},\"owner_alive\":true");
    assert!(
        eventually(WAIT, || {
            let j = ok(&["inspect", "--json", &name]);
            j.contains(&owner) && j.contains("\"waiting_producers\":1")
        }),
        "the child never showed up as the producer lock's owner"
    );
    let text = ok(&["inspect", &name]);
    // The child runs its function on a thread of its own: any tid, that pid.
    let held = text
        .lines()
        .find(|l| l.starts_with("producer lock:"))
        .unwrap();
    assert!(
        held.starts_with("producer lock:     held by thread ")
            && held.ends_with(&format!(" of process {pid} (alive)")),
        "{text}"
    );

    p.kill().unwrap();
    assert!(p.join().is_err());
    let j = ok(&["inspect", "--json", &name]);
    let producer = j.split("\"name\":\"producer lock\"").nth(1).unwrap();
    // The lock still names its dead holder (the next locker takes it over).
    assert!(
        producer.starts_with(",\"owner_tid\":")
            && producer.contains(",\"owner_pid\":null,\"owner_alive\":false,\"owner_died\":true"),
        "{j}"
    );
    let text = ok(&["inspect", &name]);
    let held = text
        .lines()
        .find(|l| l.starts_with("producer lock:"))
        .unwrap();
    assert!(
        held.starts_with("producer lock:     held by thread ")
            && held
                .ends_with(" (dead); its holder died holding it (the next locker takes it over)"),
        "{text}"
    );

    q.close();
    let j = ok(&["inspect", "--json", &name]);
    assert!(j.contains(&format!("\"items\":{n},")), "{j}");
    assert!(j.contains("\"closed\":true"), "{j}");
    // After recovery by the next producer the lock reads as free again.
    assert!(q.try_put(&0).unwrap_err().is_closed());
    drop(q);

    // A mutex held by a killed process.
    let mname = ctx.name("mutex");
    let m = Mutex::create(&mname, 0u32).unwrap();
    let ready = Event::new().unwrap();
    let p = spawn(lock_and_wait, (m.clone(), ready.clone()));
    ready.wait_timeout(WAIT).unwrap();
    let text = ok(&["inspect", &mname]);
    let held = text.lines().find(|l| l.starts_with("lock:")).unwrap();
    assert!(
        held.starts_with("lock:              held by thread ")
            && held.ends_with(&format!(" of process {} (alive)", p.pid())),
        "{text}"
    );
    p.kill().unwrap();
    assert!(p.join().is_err());
    let text = ok(&["inspect", &mname]);
    let held = text.lines().find(|l| l.starts_with("lock:")).unwrap();
    assert!(
        held.starts_with("lock:              held by thread ")
            && held
                .ends_with(" (dead); its holder died holding it (the next locker takes it over)"),
        "{text}"
    );
    match m.lock() {
        Err(LockError::OwnerDied(guard)) => drop(guard),
        other => panic!("expected OwnerDied, got {}", other.is_ok()),
    }
    let text = ok(&["inspect", &mname]);
    assert!(
        text.contains("lock:              free; data not marked consistent"),
        "{text}"
    );
}

#[test]
fn watch_prints_the_requested_refreshes() {
    let ctx = Ctx::new("cli_watch");
    let name = ctx.name("queue");
    let q = Queue::<u32>::create(&name, 4096).unwrap();
    q.put(&1).unwrap();
    q.put(&2).unwrap();
    let out = ok(&["watch", &name, "--count", "2", "--interval", "50"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], format!("watching queue \"{name}\""));
    assert!(
        lines[1].contains("ITEMS") && lines[1].contains("PUT/S"),
        "{out}"
    );
    for line in &lines[2..] {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cols[1..3], ["2", "32"], "{line}");
        assert_eq!(cols[5], "open", "{line}");
    }
    assert_eq!(lines[2].split_whitespace().nth(3), Some("-"));
    assert_eq!(lines[3].split_whitespace().nth(3), Some("0.0"));

    // A value: its lock and contents at each refresh.
    let vname = ctx.name("value");
    let v = Value::create(&vname, 1u8).unwrap();
    let out = ok(&["watch", &vname, "--count", "2", "--interval", "50"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], format!("watching Value \"{vname}\""));
    assert!(
        lines[1].contains("LOCK") && lines[1].contains("CONTENTS"),
        "{out}"
    );
    assert!(
        lines[2].contains("free") && lines[2].ends_with(" 1"),
        "{out}"
    );
    // Something with nothing to sample: an error, status 1.
    let ename = ctx.name("event");
    let e = ipckit::sync::Event::create(&ename).unwrap();
    let (code, _, err) = ipckit(&["watch", &ename, "--count", "1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ipckit watches queues, mutexes, values, arrays and published pools"),
        "{err}"
    );
    drop((q, v, e));
}

#[test]
fn errors_and_usage_have_distinct_exit_codes() {
    let ctx = Ctx::new("cli_errors");
    let missing = ctx.name("missing");
    let (code, out, err) = ipckit(&["inspect", &missing]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!("ipckit: cannot inspect \"{missing}\": no object \"{missing}\" in /dev/shm\n")
    );
    let (code, _, err) = ipckit(&["rm", "a/b"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("ipckit: cannot remove \"a/b\": invalid segment name"),
        "{err}"
    );
    for args in [
        &["frobnicate"][..],
        &["clean"],
        &["rm"],
        &["watch"],
        &["ls", "--bogus"],
    ] {
        let (code, _, err) = ipckit(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("Usage"), "{err}");
    }
    let (code, out, _) = ipckit(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("clean"), "{out}");
}

#[test]
fn inspecting_an_object_another_process_keeps_truncating_never_dies() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let ctx = Ctx::new("cli_truncated");
    let name = ctx.name("q");
    let q = Queue::<u32>::create(&name, 4096).unwrap();
    let path = Path::new("/dev/shm").join(&name);
    let full = std::fs::metadata(&path).unwrap().len();
    // Another process of this user (a thread here) empties it and restores its length,
    // again and again. `inspect` reads with pread, so it reports what it
    // finds; a mapping read past the end of the file is SIGBUS.
    let stop = AtomicBool::new(false);
    let mut described = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.set_len(0).unwrap();
                f.set_len(full).unwrap();
            }
        });
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(1) {
            if ipckit::admin::inspect(&name).is_ok() {
                described += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(described > 0);
    let text = ok(&["inspect", &name]);
    assert!(
        text.contains(&format!("name:              {name}")),
        "{text}"
    );
    // This process's mapping saw its pages dropped: never touch it again.
    std::mem::forget(q);
    ipckit::Segment::unlink(&name).unwrap();
}

#[test]
fn ls_and_inspect_show_owner_and_mode() {
    let ctx = Ctx::new("cli_owner");
    let name = ctx.name("v");
    let v = Value::create(&name, 1u32).unwrap();
    let uid = std::fs::metadata(Path::new("/dev/shm").join(&name))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let table = ok(&["ls"]);
    assert!(
        table.lines().next().unwrap().contains("OWNER  MODE"),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[3..5], [uid.to_string().as_str(), "0600"], "{row}");
    let json = ok(&["ls", "--json"]);
    let line = json_line(&json, &name).unwrap();
    assert!(
        line.contains(&format!("\"uid\":{uid},\"mode\":\"0600\"")),
        "{line}"
    );
    let text = ok(&["inspect", &name]);
    assert!(
        text.contains(&format!("owner:             uid {uid}, mode 0600")),
        "{text}"
    );
    drop(v);
}

#[test]
fn inspect_shows_the_contents_of_plain_values_and_arrays() {
    let ctx = Ctx::new("cli_contents");
    let names: Vec<String> = ["v", "neg", "f", "a", "b"]
        .iter()
        .map(|t| ctx.name(t))
        .collect();
    let _v = Value::create(&names[0], 41u64).unwrap();
    let _neg = Value::create(&names[1], -7i32).unwrap();
    let _f = Value::create(&names[2], 2.5f64).unwrap();
    let _short = ipckit::Array::create(&names[3], &[1u32, 2, 3]).unwrap();
    let _long = ipckit::Array::create(&names[4], &(0..20u16).collect::<Vec<_>>()).unwrap();
    let line = |name: &str, key: &str| -> String {
        let text = ok(&["inspect", name]);
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_owned()
    };
    assert!(line(&names[0], "value:").contains(" 41 (read without the lock)"));
    assert!(line(&names[1], "value:").contains(" -7 "));
    assert!(line(&names[2], "value:").contains(" 2.5 "));
    assert!(line(&names[3], "elements:").contains("[1, 2, 3]"));
    let l = line(&names[4], "elements:");
    assert!(
        l.contains("[0, 1, 2, ") && l.contains(", 15, … (4 more)]"),
        "{l}"
    );
    let j = ok(&["inspect", "--json", &names[0]]);
    assert!(j.contains("\"contents\":\"41\""), "{j}");
}

fn wait_on(e: Event) -> u32 {
    e.wait();
    1
}

#[test]
fn a_published_pool_shows_in_ls_inspect_and_watch() {
    use ipckit::pool::{Executor, ProcessPool};
    let ctx = Ctx::new("cli_pool");
    let name = ctx.name("pool");
    let pool = ProcessPool::builder()
        .workers(2)
        .publish(name.as_str())
        .build()
        .unwrap();
    let release = Event::new().unwrap();
    let busy: Vec<_> = (0..2)
        .map(|_| pool.submit(wait_on, release.clone()).unwrap())
        .collect();
    assert!(eventually(Duration::from_secs(30), || pool.stats().running == 2));
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    // The counters reach the board within a collector slice.
    assert!(eventually(Duration::from_secs(10), || {
        ok(&["inspect", &name]).contains("running 2")
    }));
    let table = ok(&["ls"]);
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(row.contains(" Pool "), "{row}");
    let text = ok(&["inspect", &name]);
    let tasks = text.lines().find(|l| l.starts_with("tasks:")).unwrap();
    assert!(
        tasks.contains("pending 0, running 2, completed 0"),
        "{tasks}"
    );
    for pid in &pids {
        assert!(tasks.contains(pid.as_str()), "{tasks}");
    }
    let out = ok(&["watch", &name, "--count", "1"]);
    assert!(
        out.starts_with(&format!("watching Pool \"{name}\"")),
        "{out}"
    );
    assert!(out.contains("running 2"), "{out}");
    release.set();
    for h in busy {
        h.result().unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || {
        ok(&["inspect", &name]).contains("completed 2")
    }));
    // The pool's end removes it.
    drop(pool);
    assert!(!exists(&name));
}
