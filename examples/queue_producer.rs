//! Terminal 2 of the queue pair: sends COUNT messages of SIZE bytes.
//!
//! ```text
//! terminal 1:  cargo run --release --example queue_consumer -- jobs
//! terminal 2:  cargo run --release --example queue_producer -- jobs 1000000 4096
//! ```

use std::time::Instant;

use ipckit::queue::Queue;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ipckit::init();
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "jobs".to_owned());
    let count: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let size: usize = args.next().map_or(Ok(4096), |s| s.parse())?;
    if size < 9 {
        return Err("SIZE must be at least 9 bytes (a kind byte and a sequence number)".into());
    }
    let queue = Queue::<()>::open_or_create(&name, 64 << 20)?;
    queue.segment().persist(); // the consumer removes the name
    println!("producer: sending {count} messages of {size} bytes to {name:?}");

    let mut msg = vec![0u8; size];
    let mut sum = 0u64;
    let start = Instant::now();
    for seq in 0..count {
        msg[0] = 0;
        msg[1..9].copy_from_slice(&seq.to_le_bytes());
        msg[9..].fill(seq as u8);
        sum = sum.wrapping_add(checksum(&msg));
        queue.put_bytes(&msg)?;
    }
    let mut end = vec![1u8];
    end.extend_from_slice(&count.to_le_bytes());
    end.extend_from_slice(&sum.to_le_bytes());
    queue.put_bytes(&end)?;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "producer: done in {elapsed:.3} s ({:.2} M msgs/s, {:.2} GB/s, checksums included)",
        count as f64 / elapsed / 1e6,
        (count * size as u64) as f64 / elapsed / 1e9
    );
    Ok(())
}

/// The consumer's checksum.
fn checksum(msg: &[u8]) -> u64 {
    msg.chunks(8).fold(0u64, |acc, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        acc.rotate_left(5) ^ u64::from_le_bytes(w)
    })
}
