//! Terminal 1 of the queue pair: receives messages, verifies them, reports speed.
//!
//! ```text
//! terminal 1:  cargo run --release --example queue_consumer -- jobs
//! terminal 2:  cargo run --release --example queue_producer -- jobs 1000000 4096
//! ```
//!
//! Either side may start first: both open the queue or create it. The
//! consumer removes the name when it is done.

use std::time::Instant;

use ipckit::queue::Queue;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ipckit::init();
    let name = std::env::args().nth(1).unwrap_or_else(|| "jobs".to_owned());
    let queue = Queue::<()>::open_or_create(&name, 64 << 20)?;
    queue.segment().take_ownership(); // we unlink it when done
    println!(
        "consumer: waiting on queue {name:?} ({} MiB ring)",
        queue.capacity() >> 20
    );

    let mut buf = Vec::new();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut sum = 0u64;
    let mut start = None;
    loop {
        queue.get_bytes_into(&mut buf)?;
        let started = *start.get_or_insert_with(Instant::now);
        match buf.first() {
            Some(0) => {
                let seq = u64::from_le_bytes(buf[1..9].try_into()?);
                if seq != count {
                    return Err(format!("message {seq} arrived when {count} was due").into());
                }
                sum = sum.wrapping_add(checksum(&buf));
                count += 1;
                bytes += buf.len() as u64;
            }
            Some(1) => {
                let elapsed = started.elapsed().as_secs_f64();
                let sent = u64::from_le_bytes(buf[1..9].try_into()?);
                let their_sum = u64::from_le_bytes(buf[9..17].try_into()?);
                println!(
                    "consumer: {count} messages, {:.1} MB in {:.3} s: {:.2} M msgs/s, {:.2} GB/s",
                    bytes as f64 / 1e6,
                    elapsed,
                    count as f64 / elapsed / 1e6,
                    bytes as f64 / elapsed / 1e9
                );
                if sent != count || their_sum != sum {
                    return Err(format!(
                        "checksum mismatch: producer sent {sent} messages with sum {their_sum:#x}, \
                         we got {count} with sum {sum:#x}"
                    )
                    .into());
                }
                println!("consumer: checksum {sum:#018x} matches the producer's");
                return Ok(());
            }
            _ => return Err("unexpected message".into()),
        }
    }
}

/// A cheap checksum over 8-byte words (the producer computes the same).
pub fn checksum(msg: &[u8]) -> u64 {
    msg.chunks(8).fold(0u64, |acc, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        acc.rotate_left(5) ^ u64::from_le_bytes(w)
    })
}
