//! "No system call when nobody waits": counted with strace (skipped if absent).

mod common;

use std::process::{Command, Stdio};

use common::{Ctx, child, child_command};
use ipckit::sync::{Barrier, Condvar, Event, Mutex, Semaphore};
use ipckit::{Array, Value};

const OPS: u32 = 20_000;

#[test]
fn child_uncontended_ops() {
    child("child_uncontended_ops", |n: u32| {
        let m = Mutex::new(0u64).unwrap();
        let cv = Condvar::new().unwrap();
        let e = Event::new().unwrap();
        let s = Semaphore::new(1).unwrap();
        let b = Barrier::new(1).unwrap();
        let v = Value::new(0u32).unwrap();
        let a = Array::new(&[0u8; 16]).unwrap();
        let q = ipckit::queue::Queue::<u32>::new(1 << 16).unwrap();
        let mut buf = Vec::with_capacity(64);
        for i in 0..n {
            q.put(&i).unwrap();
            assert_eq!(q.get().unwrap(), i);
            q.put_bytes(b"sixteen bytes!!!").unwrap();
            q.get_bytes_into(&mut buf).unwrap();
            *m.lock().unwrap() += 1;
            cv.notify_one();
            cv.notify_all();
            e.set();
            e.wait();
            e.clear();
            drop(s.acquire().unwrap());
            b.wait().unwrap();
            v.set(i).unwrap();
            a.set(3, i as u8).unwrap();
        }
        assert_eq!(*m.lock().unwrap(), u64::from(n));
    });
}

/// `(syscall, calls)` for every row of strace's `-c` summary.
fn rows(summary: &str) -> Vec<(String, u64)> {
    summary
        .lines()
        .filter_map(|l| {
            // "% time, seconds, usecs/call, calls, [errors,] syscall"
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.last()?;
            let calls = f.get(3)?.parse().ok()?;
            (name != "total").then(|| (name.to_owned(), calls))
        })
        .collect()
}

#[test]
fn uncontended_operations_make_no_futex_calls() {
    let t = Ctx::new("syscalls");
    let have_strace = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have_strace {
        eprintln!("skipping: strace is not installed");
        return;
    }
    let out = std::env::temp_dir().join(format!("{}.strace", t.name("summary")));
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-c", "-o"])
        .arg(&out)
        .arg(std::env::current_exe().unwrap());
    let status = child_command(cmd, "child_uncontended_ops", &OPS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let summary = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    if !status.success() && summary.trim().is_empty() {
        eprintln!("skipping: strace cannot trace here ({status})");
        return;
    }
    assert!(
        status.success(),
        "child failed under strace: {status}\n{summary}"
    );
    let rows = rows(&summary);
    assert!(!rows.is_empty(), "no strace summary:\n{summary}");
    let total: u64 = rows.iter().map(|(_, c)| c).sum();
    let futex: u64 = rows
        .iter()
        .filter(|(n, _)| n == "futex")
        .map(|(_, c)| c)
        .sum();
    eprintln!(
        "{OPS} rounds of 14 uncontended operations: {total} system calls, {futex} futex\n{summary}"
    );
    // Start-up and creating the seven objects take a few hundred calls; the
    // operations themselves must take none, so the total may not grow with OPS.
    assert!(
        total < 1_000,
        "{total} system calls for {OPS} uncontended rounds"
    );
    assert!(
        futex < 20,
        "{futex} futex calls for {OPS} uncontended rounds"
    );
}
