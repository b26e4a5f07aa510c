//! Two processes share a named segment and a `Value<u64>` counter.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The parent creates both objects, starts a second copy of this program,
//! and hands it the two handles (serde-encoded on its command line). Both
//! processes then increment the counter under its lock; the child also
//! answers through the segment. Nothing is left in /dev/shm afterwards.

use std::process::Command;
use std::time::Instant;

use ipckit::{Segment, Value};

const INCREMENTS: u64 = 200_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2]);
    }

    let pid = std::process::id();
    let segment = Segment::create(&format!("ipckit-quickstart-{pid}"), 4096)?;
    let counter = Value::create(&format!("ipckit-quickstart-{pid}-counter"), 0u64)?;
    let greeting = format!("hello from process {pid}");
    segment.write_at(0, &(greeting.len() as u32).to_le_bytes())?;
    segment.write_at(4, greeting.as_bytes())?;
    println!(
        "[parent {pid}] created segment {:?} ({} bytes) and a Value<u64> counter",
        segment.name().unwrap_or("?"),
        segment.len()
    );

    // Handles are serde values: encode them and pass them to the child.
    let token = hex(&postcard::to_allocvec(&(&segment, &counter))?);
    let start = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", &token])
        .spawn()?;
    for _ in 0..INCREMENTS {
        counter.update(|c| *c += 1)?;
    }
    let status = child.wait()?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("child failed: {status}").into());
    }

    let mut len = [0u8; 4];
    segment.read_at(1024, &mut len)?;
    let mut reply = vec![0u8; u32::from_le_bytes(len) as usize];
    segment.read_at(1028, &mut reply)?;
    let total = counter.get()?;
    println!(
        "[parent {pid}] the child wrote back: {:?}",
        String::from_utf8_lossy(&reply)
    );
    println!(
        "[parent {pid}] counter = {total} (2 processes x {INCREMENTS} locked increments) in {:.1} ms, {:.0} ns per increment",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / total as f64
    );
    assert_eq!(total, 2 * INCREMENTS, "no increment may be lost");
    println!("[parent {pid}] done; dropping the handles unlinks both names");
    Ok(())
}

fn child(token: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let (segment, counter): (Segment, Value<u64>) = postcard::from_bytes(&unhex(token)?)?;
    let mut len = [0u8; 4];
    segment.read_at(0, &mut len)?;
    let mut greeting = vec![0u8; u32::from_le_bytes(len) as usize];
    segment.read_at(4, &mut greeting)?;
    println!(
        "[child  {pid}] opened {:?} and read: {:?}",
        segment.name().unwrap_or("?"),
        String::from_utf8_lossy(&greeting)
    );
    for _ in 0..INCREMENTS {
        counter.update(|c| *c += 1)?;
    }
    let reply = format!(
        "hello back from process {pid}, counter was {} when I finished",
        counter.get()?
    );
    segment.write_at(1024, &(reply.len() as u32).to_le_bytes())?;
    segment.write_at(1028, reply.as_bytes())?;
    println!("[child  {pid}] did {INCREMENTS} increments under the lock");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, std::num::ParseIntError> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
        .collect()
}
