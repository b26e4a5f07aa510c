//! Worker processes count words into one `SharedMap` and report their status
//! in a `ShareableList`; then a worker is killed mid-update and the map
//! carries on, with no repair step.
//!
//! ```text
//! cargo run --release --example shared_map
//! ```

use std::time::Duration;

use ipckit::collections::{Item, ShareableList, SharedMap};
use ipckit::process::Process;

const TEXT: &str = "the quick brown fox jumps over the lazy dog while the cat \
                    sleeps and the dog dreams of the quick fox and the lazy cat";
const WORKERS: usize = 3;

/// A word as a fixed-size key (shared-memory keys cannot own heap memory).
fn key(word: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let n = word.len().min(16);
    k[..n].copy_from_slice(&word.as_bytes()[..n]);
    k
}

fn word(key: &[u8; 16]) -> String {
    let end = key.iter().position(|&b| b == 0).unwrap_or(16);
    String::from_utf8_lossy(&key[..end]).into_owned()
}

fn count_words((counts, status, me): (SharedMap<[u8; 16], u64>, ShareableList, usize)) {
    status.set(me, "running").unwrap();
    let words: Vec<&str> = TEXT.split_whitespace().collect();
    let mut n = 0u64;
    for w in words.iter().skip(me).step_by(WORKERS) {
        // Insert-or-increment under one lock.
        counts.update_or_insert(key(w), 0, |c| *c += 1).unwrap();
        n += 1;
    }
    status.set(me, format!("done: {n} words")).unwrap();
}

fn churn_forever(counts: SharedMap<[u8; 16], u64>) {
    for i in 0u64.. {
        counts.insert(key("churn"), i).unwrap();
        counts.remove(&key("churn")).unwrap();
    }
}

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let counts = SharedMap::<[u8; 16], u64>::new(64)?;
    let status = ShareableList::new_with_capacities((0..WORKERS).map(|_| (Item::None, 32)))?;

    let workers = (0..WORKERS)
        .map(|me| Process::spawn(count_words, (counts.clone(), status.clone(), me)))
        .collect::<ipckit::Result<Vec<_>>>()?;
    for w in workers {
        w.join()?;
    }
    for (i, s) in status.to_vec()?.iter().enumerate() {
        println!("worker {i}: {s:?}");
    }
    let mut all = counts.to_vec()?;
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (k, n) in all.iter().take(5) {
        println!("{:>8} {n}", word(k));
    }
    let total: u64 = all.iter().map(|(_, n)| n).sum();
    assert_eq!(total, TEXT.split_whitespace().count() as u64);

    // A process killed (SIGKILL) in the middle of inserting and removing:
    // the next operation recovers on its own; nothing committed is lost.
    let victim = Process::spawn(churn_forever, counts.clone())?;
    std::thread::sleep(Duration::from_millis(50));
    victim.kill()?;
    let _ = victim.join();
    let after: u64 = counts
        .to_vec()?
        .iter()
        .filter(|(k, _)| *k != key("churn"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(after, total);
    println!(
        "after killing a writer: {} entries, {after} words, map still usable: {:?}",
        counts.len()?,
        counts.insert(key("again"), 1)?
    );
    Ok(())
}
