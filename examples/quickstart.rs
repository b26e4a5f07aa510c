//! A tour in one file: a child process, a named segment, a locked counter.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The parent creates a named segment and a `Value<u64>` counter, starts a
//! child process running `child_main` and hands it both (they are ordinary
//! serde values). Both processes increment the counter under its lock; the
//! child answers through the segment and returns a summary, which `join`
//! delivers. Nothing is left in /dev/shm afterwards.

use std::time::Instant;

use ipckit::process::{self, Process};
use ipckit::{Segment, Value};

const INCREMENTS: u64 = 200_000;

/// Runs in the child process.
fn child_main((segment, counter): (Segment, Value<u64>)) -> String {
    let me = process::current_process();
    let greeting = read_string(&segment, 0).expect("read greeting");
    println!(
        "[child  {}] opened {:?} and read: {greeting:?}",
        me.pid(),
        segment.name().unwrap_or("?")
    );
    for _ in 0..INCREMENTS {
        counter.update(|c| *c += 1).expect("increment");
    }
    let reply = format!("hello back from {} (pid {})", me.name(), me.pid());
    write_string(&segment, 1024, &reply).expect("write reply");
    format!("{} did {INCREMENTS} locked increments", me.name())
}

fn main() -> ipckit::Result<()> {
    ipckit::init(); // in the child: runs `child_main`, reports its result, exits

    let pid = std::process::id();
    let segment = Segment::create(&format!("ipckit-quickstart-{pid}"), 4096)?;
    let counter = Value::create(&format!("ipckit-quickstart-{pid}-counter"), 0u64)?;
    write_string(&segment, 0, &format!("hello from process {pid}"))?;
    println!(
        "[parent {pid}] created segment {:?} ({} bytes) and a Value<u64> counter",
        segment.name().unwrap_or("?"),
        segment.len()
    );

    let start = Instant::now();
    let child = Process::builder()
        .name("quickstart-child")
        .spawn(child_main, (segment.clone(), counter.clone()))?;
    println!(
        "[parent {pid}] started {} as pid {}",
        child.name(),
        child.pid()
    );
    for _ in 0..INCREMENTS {
        counter.update(|c| *c += 1)?;
    }
    let summary = child.join()?;
    let elapsed = start.elapsed();

    let total = counter.get()?;
    println!("[parent {pid}] the child returned: {summary:?}");
    println!(
        "[parent {pid}] the child wrote back: {:?}",
        read_string(&segment, 1024)?
    );
    println!(
        "[parent {pid}] counter = {total} (2 processes x {INCREMENTS} locked increments) in {:.1} ms including the child's start",
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(total, 2 * INCREMENTS, "no increment may be lost");
    println!("[parent {pid}] done; dropping the handles unlinks both names");
    Ok(())
}

fn write_string(seg: &Segment, at: usize, s: &str) -> ipckit::Result<()> {
    seg.write_at(at, &(s.len() as u32).to_le_bytes())?;
    seg.write_at(at + 4, s.as_bytes())
}

fn read_string(seg: &Segment, at: usize) -> ipckit::Result<String> {
    let mut len = [0u8; 4];
    seg.read_at(at, &mut len)?;
    let mut buf = vec![0u8; (u32::from_le_bytes(len) as usize).min(seg.len())];
    seg.read_at(at + 4, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
