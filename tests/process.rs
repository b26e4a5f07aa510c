//! `ipckit::process` between real processes.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Ctx, Picky};
use ipckit::process::{self, Process, ProcessInfo};
use ipckit::sync::{Barrier, Condvar, Event, Mutex, Semaphore};
use ipckit::{Array, ErrorKind, Segment, Value};
use serde::{Deserialize, Serialize};

ipckit::test_support!();

fn square(x: u64) -> u64 {
    x * x
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Job {
    id: u32,
    words: Vec<String>,
}

fn shout(job: Job) -> (u32, String) {
    (job.id, job.words.join(" ").to_uppercase())
}

#[test]
fn results_round_trip() {
    let _t = Ctx::new("round_trip");
    assert_eq!(Process::spawn(square, 12).unwrap().join().unwrap(), 144);
    let job = Job {
        id: 7,
        words: vec!["hello".into(), "child".into()],
    };
    let r = Process::spawn(shout, job).unwrap().join().unwrap();
    assert_eq!(r, (7, "HELLO CHILD".to_owned()));
    // A closure that captures nothing is a plain fn.
    let p = Process::spawn(|v: Vec<i32>| v.iter().sum::<i32>(), vec![1, 2, 3]).unwrap();
    assert_eq!(p.join().unwrap(), 6);
}

fn boom(n: u32) -> u32 {
    if n > 0 {
        panic!("boom number {n}");
    }
    n
}

#[test]
fn a_panic_comes_back_with_its_message_and_location() {
    let _t = Ctx::new("panic");
    let e = Process::builder()
        .name("exploder")
        .spawn(boom, 7)
        .unwrap()
        .join()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    assert!(e.is_panicked());
    let text = e.to_string();
    assert!(text.contains("boom number 7"), "{text}");
    assert!(text.contains("tests/process.rs:"), "{text}");
    assert!(text.contains("\"exploder\""), "{text}");
}

fn end_badly(how: String) {
    match how.as_str() {
        "abort" => std::process::abort(),
        "exit" => std::process::exit(3),
        "exit0" => std::process::exit(0),
        "sigkill" => {
            // SAFETY: signals this very process.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        _ => {}
    }
}

#[test]
fn a_child_ending_without_a_result_reports_its_exit_status() {
    let _t = Ctx::new("no_result");
    for (how, expect) in [
        ("abort", "killed by signal 6 (SIGABRT)"),
        ("exit", "exit code 3"),
        ("exit0", "exit code 0"),
        ("sigkill", "killed by signal 9 (SIGKILL)"),
    ] {
        let e = Process::spawn(end_badly, how.to_owned())
            .unwrap()
            .join()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProcessDied, "{how}: {e}");
        assert!(e.to_string().contains("ended without a result"), "{e}");
        assert!(e.to_string().contains(expect), "{how}: {e}");
    }
}

const KINDS: [ErrorKind; 5] = [
    ErrorKind::NotFound,
    ErrorKind::Timeout,
    ErrorKind::OwnerDied,
    ErrorKind::Closed,
    ErrorKind::Incompatible,
];

fn fail_with(which: usize) -> ipckit::Result<u32> {
    Err(ipckit::Error::new(
        KINDS[which],
        format!("failed on purpose with {}", KINDS[which]),
    ))
}

fn read_file(path: String) -> ipckit::Result<Vec<u8>> {
    Ok(std::fs::read(path)?)
}

#[test]
fn a_childs_error_comes_back_with_its_kind() {
    let _t = Ctx::new("child_error_kind");
    for (i, kind) in KINDS.into_iter().enumerate() {
        let e = Process::spawn(fail_with, i)
            .unwrap()
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert_eq!(e.to_string(), format!("failed on purpose with {kind}"));
    }
    // An I/O error turned into an ipckit error by `?` in the child.
    let e = Process::spawn(read_file, "/nonexistent/ipckit-child".to_owned())
        .unwrap()
        .join()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

fn picky_id(p: Picky) -> u32 {
    p.0
}

/// A result that decodes but refuses to encode.
#[derive(Debug)]
struct StaysHome;

impl Serialize for StaysHome {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value stays home"))
    }
}

impl<'de> Deserialize<'de> for StaysHome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StaysHome, D::Error> {
        <()>::deserialize(d).map(|()| StaysHome)
    }
}

fn stays_home(_: ()) -> StaysHome {
    StaysHome
}

#[test]
fn a_child_that_cannot_run_its_function_reports_the_kind_it_found() {
    let _t = Ctx::new("child_failure_kind");
    assert_eq!(
        Process::spawn(picky_id, Picky(12)).unwrap().join().unwrap(),
        12
    );
    let e = Process::spawn(picky_id, Picky(13))
        .unwrap()
        .join()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("could not run its function: cannot decode the argument"),
        "{text}"
    );
    assert!(text.contains("Picky"), "{text}");

    let e = Process::spawn(stays_home, ()).unwrap().join().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
    let text = e.to_string();
    assert!(text.contains("cannot encode the result"), "{text}");
}

#[test]
fn fifty_children_at_once() {
    let _t = Ctx::with_limit("fifty", Duration::from_secs(300));
    let children: Vec<_> = (0..50u64)
        .map(|i| Process::builder().daemon(true).spawn(square, i).unwrap())
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.pid()).collect();
    let results: Vec<u64> = children.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(results, (0..50u64).map(|i| i * i).collect::<Vec<_>>());
    // Joined children are reaped: no zombies.
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || !is_our_zombie(pid));
    }
}

fn is_our_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            let ppid: u32 = state
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            state.starts_with('Z') && ppid == std::process::id()
        })
        .unwrap_or(false)
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn join_timeout_and_try_join_leave_the_child_running() {
    let _t = Ctx::new("join_timeout");
    let mut p = Process::builder()
        .daemon(true)
        .spawn(sleep_ms, 400)
        .unwrap();
    let e = p.try_join().unwrap_err();
    assert!(e.is_would_block(), "{e}");
    let start = Instant::now();
    let e = p.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(p.is_alive());
    assert!(p.exit_status().is_none());
    let e = p
        .join_deadline(Instant::now() + Duration::from_millis(20))
        .unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), 400);
    assert!(!p.is_alive());
    assert_eq!(p.exit_status().unwrap().code(), Some(0));
    // The result was taken; a second join says so.
    assert_eq!(p.try_join().unwrap_err().kind(), ErrorKind::InvalidArgument);
}

fn sleep_forever(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn terminate_and_kill() {
    use std::os::unix::process::ExitStatusExt;
    let _t = Ctx::new("terminate");
    let p = Process::builder()
        .daemon(true)
        .spawn(sleep_forever, ())
        .unwrap();
    assert!(p.is_alive());
    p.terminate().unwrap();
    let pid = p.pid();
    let mut p = p;
    let e = p.join_timeout(Duration::from_secs(30)).unwrap_err();
    assert!(e.to_string().contains("SIGTERM"), "{e}");
    assert_eq!(p.exit_status().unwrap().signal(), Some(libc::SIGTERM));
    // Signalling a finished child is a no-op, never a stray signal.
    p.terminate().unwrap();
    p.kill().unwrap();
    assert!(!is_our_zombie(pid));

    let p = Process::builder()
        .daemon(true)
        .spawn(sleep_forever, ())
        .unwrap();
    p.kill().unwrap();
    let e = p.join().unwrap_err();
    assert!(e.is_process_died());
    assert!(e.to_string().contains("SIGKILL"), "{e}");
}

fn who_am_i(_: ()) -> (ProcessInfo, Option<ProcessInfo>, Option<String>) {
    (
        process::current_process(),
        process::parent_process(),
        std::env::var("IPCKIT_TEST_VALUE").ok(),
    )
}

#[test]
fn names_parents_and_environment() {
    let _t = Ctx::new("names");
    let p = Process::builder()
        .name("worker-a")
        .env("IPCKIT_TEST_VALUE", "forty-two")
        .spawn(who_am_i, ())
        .unwrap();
    let pid = p.pid();
    let (me, parent, value) = p.join().unwrap();
    assert_eq!(me.pid(), pid);
    assert_eq!(me.name(), "worker-a");
    let parent = parent.expect("a child has a parent");
    assert_eq!(parent.pid(), std::process::id());
    assert_eq!(parent.name(), "MainProcess");
    assert_eq!(value.as_deref(), Some("forty-two"));
    assert_eq!(process::current_process().name(), "MainProcess");
    assert!(process::parent_process().is_none());
    // Default names count up.
    let (me, _, _) = Process::spawn(who_am_i, ()).unwrap().join().unwrap();
    assert!(me.name().starts_with("Process-"), "{}", me.name());
    let (_, _, value) = Process::builder()
        .env("IPCKIT_TEST_VALUE", "x")
        .env_remove("IPCKIT_TEST_VALUE")
        .spawn(who_am_i, ())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(value, None);
    assert!(process::cpu_count() >= 1);
}

fn print_and_echo(s: String) -> usize {
    let mut input = String::new();
    std::io::stdin().read_line(&mut input).unwrap();
    println!("child says {s} and read {}", input.trim());
    input.len()
}

#[test]
fn stdio_can_be_piped() {
    use std::io::Write;
    let _t = Ctx::new("stdio");
    let mut p = Process::builder()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn(print_and_echo, "hi".to_owned())
        .unwrap();
    p.stdin().unwrap().write_all(b"ping\n").unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("child says hi and read ping"), "{out:?}");
    assert_eq!(p.join().unwrap(), 5);
}

#[test]
fn active_children_lists_running_ones() {
    let _t = Ctx::new("active");
    let a = Process::builder()
        .name("sleeper-a")
        .daemon(true)
        .spawn(sleep_forever, ())
        .unwrap();
    let b = Process::builder()
        .name("sleeper-b")
        .daemon(true)
        .spawn(sleep_forever, ())
        .unwrap();
    let names = |v: Vec<ProcessInfo>| {
        v.into_iter()
            .map(|p| p.name().to_owned())
            .collect::<Vec<_>>()
    };
    let active = names(process::active_children());
    assert!(active.contains(&"sleeper-a".to_owned()), "{active:?}");
    assert!(active.contains(&"sleeper-b".to_owned()), "{active:?}");
    a.kill().unwrap();
    let _ = a.join();
    let active = names(process::active_children());
    assert!(!active.contains(&"sleeper-a".to_owned()), "{active:?}");
    b.kill().unwrap();
    let _ = b.join();
}

#[test]
fn dropped_handles_are_reaped_in_the_background() {
    let _t = Ctx::new("detached");
    let p = Process::spawn(sleep_ms, 50).unwrap();
    let pid = p.pid();
    drop(p);
    assert!(common::eventually(
        Duration::from_secs(10),
        || !is_our_zombie(pid) && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    ));
}

fn sum_bytes(v: Vec<u8>) -> Vec<u8> {
    let sum: u64 = v.iter().map(|&b| b as u64).sum();
    let mut out = v;
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

#[test]
fn large_arguments_and_results() {
    let _t = Ctx::new("large");
    let v: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected: u64 = v.iter().map(|&b| b as u64).sum();
    let out = Process::spawn(sum_bytes, v.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(&out[..v.len()], &v[..]);
    assert_eq!(
        u64::from_le_bytes(out[v.len()..].try_into().unwrap()),
        expected
    );
    // Over the result limit: a clear error, not a huge allocation.
    let e = Process::builder()
        .max_result_size(1 << 20)
        .spawn(sum_bytes, v)
        .unwrap()
        .join()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
}

fn nested(x: u64) -> u64 {
    Process::spawn(square, x).unwrap().join().unwrap() + 1
}

#[test]
fn children_can_spawn_children() {
    let _t = Ctx::new("nested");
    assert_eq!(Process::spawn(nested, 5).unwrap().join().unwrap(), 26);
}

#[test]
fn another_executable_is_refused() {
    let t = Ctx::new("other_exe");
    let copy = std::env::temp_dir().join(t.name("exe-copy"));
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    // Another test thread forking while the copy was open for writing holds
    // a write descriptor to it until that child execs, and exec then fails
    // with ETXTBSY: retry that, it says nothing about the check under test.
    let mut r = Process::builder().executable(&copy).spawn(square, 3);
    for _ in 0..50 {
        match &r {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                r = Process::builder().executable(&copy).spawn(square, 3);
            }
            _ => break,
        }
    }
    let r = r.and_then(|p| p.join());
    let _ = std::fs::remove_file(&copy);
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Incompatible, "{e}");
    assert!(e.to_string().contains("another executable"), "{e}");
    // The same file through another path is fine.
    let p = Process::builder()
        .executable(format!("/proc/{}/exe", std::process::id()))
        .spawn(square, 3)
        .unwrap();
    assert_eq!(p.join().unwrap(), 9);
}

type AllHandles = (
    Segment,
    Mutex<u64>,
    Condvar,
    Semaphore,
    Event,
    Barrier,
    Value<f64>,
    Array<i32>,
);

fn use_every_handle((seg, m, cv, s, e, b, v, a): AllHandles) -> String {
    seg.write_at(0, b"child").unwrap();
    *m.lock().unwrap() += 1;
    cv.notify_all();
    s.release().unwrap();
    v.set(2.5).unwrap();
    a.set(2, -3).unwrap();
    e.set();
    b.wait_timeout(Duration::from_secs(30)).unwrap();
    format!("{}", process::current_process().pid())
}

#[test]
fn every_handle_type_travels_to_a_child() {
    let t = Ctx::new("handles");
    for named in [false, true] {
        let n = |tag: &str| t.name(tag);
        let handles: AllHandles = if named {
            (
                Segment::create(&n("seg"), 64).unwrap(),
                Mutex::create(&n("m"), 0u64).unwrap(),
                Condvar::create(&n("cv")).unwrap(),
                Semaphore::create(&n("s"), 0).unwrap(),
                Event::create(&n("e")).unwrap(),
                Barrier::create(&n("b"), 2).unwrap(),
                Value::create(&n("v"), 0.0f64).unwrap(),
                Array::create(&n("a"), &[0i32; 4]).unwrap(),
            )
        } else {
            (
                Segment::new(64).unwrap(),
                Mutex::new(0u64).unwrap(),
                Condvar::new().unwrap(),
                Semaphore::new(0).unwrap(),
                Event::new().unwrap(),
                Barrier::new(2).unwrap(),
                Value::new(0.0f64).unwrap(),
                Array::new(&[0i32; 4]).unwrap(),
            )
        };
        let (seg, m, _cv, s, e, b, v, a) = handles.clone();
        let p = Process::builder()
            .daemon(true)
            .spawn(use_every_handle, handles)
            .unwrap();
        e.wait_timeout(Duration::from_secs(30)).unwrap();
        b.wait_timeout(Duration::from_secs(30)).unwrap();
        let pid = p.pid();
        assert_eq!(p.join().unwrap(), pid.to_string());
        let mut buf = [0u8; 5];
        seg.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"child");
        assert_eq!(*m.lock().unwrap(), 1);
        assert_eq!(s.value(), 1);
        assert_eq!(v.get().unwrap(), 2.5);
        assert_eq!(a.to_vec().unwrap(), [0, 0, -3, 0]);
    }
}

fn hold_lock_and_die(m: Mutex<u32>) {
    let mut g = m.lock().unwrap();
    *g = 99;
    std::process::abort();
}

#[test]
fn a_child_that_dies_holding_a_lock_is_reported_to_the_next_locker() {
    let _t = Ctx::new("child_dies_locked");
    let m = Mutex::new(0u32).unwrap();
    let e = Process::spawn(hold_lock_and_die, m.clone())
        .unwrap()
        .join()
        .unwrap_err();
    assert!(e.to_string().contains("SIGABRT"), "{e}");
    let g = m.lock().unwrap_err().into_guard().expect("owner died");
    assert_eq!(*g, 99);
    g.mark_consistent();
}

fn read_value(v: Value<u64>) -> u64 {
    v.get().unwrap()
}

#[test]
fn anonymous_objects_in_the_argument_outlive_the_parents_handle() {
    let _t = Ctx::new("handoff");
    // The parent keeps no handle: the memfd itself travels with the argument.
    for i in 0..20 {
        let p = Process::spawn(read_value, Value::new(i).unwrap()).unwrap();
        assert_eq!(p.join().unwrap(), i);
    }
}
