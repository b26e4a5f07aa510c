//! Daemon children die with their parent, however it dies.
//!
//! Kept in its own test binary: it makes this process a child subreaper so
//! that the orphaned grandchildren are reparented to it and can be reaped.

mod common;

use std::time::{Duration, Instant};

use common::Ctx;
use ipckit::process::Process;
use ipckit::sync::Semaphore;
use ipckit::{Array, Segment, Value};

ipckit::test_support!();

const DAEMONS: usize = 3;

fn hold_anonymous_objects(ready: Semaphore) {
    let seg = Segment::new(4 << 20).unwrap();
    seg.write_at(0, &[7; 4096]).unwrap();
    let value = Value::new(1u64).unwrap();
    ready.release().unwrap();
    let _keep = (seg, value);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Starts the daemons; `ready` is released once per daemon, after its pid
/// is in `pids` and it holds its objects (a daemon releasing `ready`
/// itself could do so before its pid was stored: CI read a 0 once).
fn middle((pids, ready): (Array<u32>, Semaphore)) {
    let up = Semaphore::new(0).unwrap();
    let children: Vec<_> = (0..DAEMONS)
        .map(|i| {
            let p = Process::builder()
                .daemon(true)
                .name(format!("daemon-{i}"))
                .spawn(hold_anonymous_objects, up.clone())
                .unwrap();
            pids.set(i, p.pid()).unwrap();
            up.acquire_timeout(Duration::from_secs(60))
                .expect("the daemon started")
                .forget();
            ready.release().unwrap();
            p
        })
        .collect();
    let _keep = children;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

#[test]
fn daemons_die_when_their_parent_is_sigkilled() {
    let _t = Ctx::new("daemons");
    // SAFETY: prctl with integer arguments.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let before = common::shm_entries_not_ours();
    let pids = Array::new(&[0u32; DAEMONS]).unwrap();
    let ready = Semaphore::new(0).unwrap();
    let parent = Process::spawn(middle, (pids.clone(), ready.clone())).unwrap();
    for _ in 0..DAEMONS {
        ready
            .acquire_timeout(Duration::from_secs(60))
            .expect("daemons started")
            .forget();
    }
    let pids = pids.to_vec().unwrap();
    assert!(
        pids.iter()
            .all(|&p| p != 0 && state(p).is_some_and(|s| s != 'Z'))
    );

    parent.kill().unwrap();
    let killed = Instant::now();
    assert!(parent.join().unwrap_err().is_process_died());
    // Orphans are reparented to us (the subreaper); reap each as it dies.
    let mut gone = [false; DAEMONS];
    while !gone.iter().all(|&g| g) && killed.elapsed() < Duration::from_secs(30) {
        for (i, &pid) in pids.iter().enumerate() {
            if gone[i] {
                continue;
            }
            let mut status = 0;
            // SAFETY: waitpid on a pid that is (now) our child; WNOHANG.
            let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
            if r == pid as i32 || state(pid).is_none() {
                gone[i] = true;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = killed.elapsed();
    eprintln!("daemons gone {elapsed:?} after their parent was killed");
    assert!(gone.iter().all(|&g| g), "daemons still alive: {pids:?}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(common::shm_entries_not_ours(), before);
}
