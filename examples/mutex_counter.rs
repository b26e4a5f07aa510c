//! N processes increment one shared counter: first without a lock, which
//! loses updates, then through `Value`'s lock, which is exact.
//!
//! ```text
//! cargo run --release --example mutex_counter
//! ```

use ipckit::process::Process;
use ipckit::{Segment, Value};

const PROCESSES: u64 = 4;
const INCREMENTS: u64 = 200_000;

/// Read, add one, write back — three steps another process can interleave with.
fn unlocked((counter, n): (Segment, u64)) {
    for _ in 0..n {
        let mut bytes = [0u8; 8];
        counter.read_at(0, &mut bytes).unwrap();
        let v = u64::from_ne_bytes(bytes) + 1;
        counter.write_at(0, &v.to_ne_bytes()).unwrap();
    }
}

/// The same under the value's lock.
fn locked((counter, n): (Value<u64>, u64)) {
    for _ in 0..n {
        counter.update(|v| *v += 1).unwrap();
    }
}

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let expected = PROCESSES * INCREMENTS;

    let raw = Segment::new(8)?;
    let children = (0..PROCESSES)
        .map(|_| Process::spawn(unlocked, (raw.clone(), INCREMENTS)))
        .collect::<ipckit::Result<Vec<_>>>()?;
    for c in children {
        c.join()?;
    }
    let mut bytes = [0u8; 8];
    raw.read_at(0, &mut bytes)?;
    let total = u64::from_ne_bytes(bytes);
    println!(
        "without a lock: {total} of {expected} increments survived ({} lost)",
        expected - total
    );

    let value = Value::new(0u64)?;
    let children = (0..PROCESSES)
        .map(|_| Process::spawn(locked, (value.clone(), INCREMENTS)))
        .collect::<ipckit::Result<Vec<_>>>()?;
    for c in children {
        c.join()?;
    }
    let total = value.get()?;
    println!("with Value's lock: {total} of {expected} increments (exact)");
    assert_eq!(total, expected);
    Ok(())
}
