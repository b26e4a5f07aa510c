//! A message of more than 4 GiB through a 16 GiB queue arrives whole, in
//! another process (issue 15: a frame header stores its length in 32 bits,
//! so in rings this large a message of 4 GiB + 64 B once came out as 64
//! bytes; such messages now travel as streams of frames of at most 2 GiB).
//!
//! Needs about 17 GiB free in /dev/shm and 14 GiB of available memory (the
//! sender's copy, the ring pages the message passes through, the
//! receiver's copy); otherwise it prints why and skips. A test binary of
//! its own, so that no other test runs beside it.

mod common;

ipckit::test_support!();

use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::queue::Queue;

const RING: usize = 16 << 30;
const LEN: usize = (4 << 30) + 64;
const CHUNK: usize = 1 << 20;

/// Byte `i` of the message: the number of its MiB, so that a slip of any
/// whole number of MiB (or a wrap at 4 GiB) shows.
fn fill(buf: &mut [u8]) {
    for (k, c) in buf.chunks_mut(CHUNK).enumerate() {
        c.fill((k % 251) as u8);
    }
}

/// Checks the pattern with memcmp-speed comparisons (fast in debug builds).
fn check(buf: &[u8]) -> bool {
    let mut reference = vec![0u8; CHUNK];
    buf.chunks(CHUNK).enumerate().all(|(k, c)| {
        reference.fill((k % 251) as u8);
        c == &reference[..c.len()]
    })
}

fn child_receive(mut q: Queue<()>) -> (u64, bool) {
    // Limits are per handle: this one's, like the sender's, is raised.
    q.set_max_message_size(LEN);
    let mut msg = Vec::new();
    q.get_bytes_into_timeout(&mut msg, Duration::from_secs(600))
        .unwrap();
    (msg.len() as u64, check(&msg))
}

fn meminfo_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? << 10)
}

fn shm_available() -> Option<u64> {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1", "/dev/shm"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

#[test]
fn a_message_over_4_gib_through_a_16_gib_queue_arrives_whole() {
    let (mem, shm) = (meminfo_available(), shm_available());
    match (mem, shm) {
        (Some(m), Some(s)) if m >= 14 << 30 && s >= 17 << 30 => {}
        _ => {
            println!(
                "skipped: needs 14 GiB of available memory and 17 GiB free in /dev/shm; \
                 this machine has {:?} and {:?} bytes",
                mem, shm
            );
            return;
        }
    }
    let _t = Ctx::with_limit("huge_message", Duration::from_secs(900));
    let mut q = Queue::<()>::new(RING).unwrap();
    q.set_max_message_size(LEN);
    let mut receiver = spawn(child_receive, q.clone());
    let mut msg = vec![0u8; LEN];
    fill(&mut msg);
    let t = Instant::now();
    q.put_bytes(&msg).unwrap();
    drop(msg);
    let (len, whole) = receiver.join_timeout(Duration::from_secs(600)).unwrap();
    println!(
        "{LEN} bytes through a {RING}-byte queue in {:?}",
        t.elapsed()
    );
    assert_eq!(len, LEN as u64, "the message arrived with another length");
    assert!(whole, "the message arrived with other bytes");
    assert!(q.is_empty());
}
