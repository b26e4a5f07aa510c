//! Terminal 2 of the ping-pong pair: connects with the auth key, sends COUNT
//! 64-byte pings and prints round-trip latency percentiles.
//!
//! ```text
//! terminal 1:  cargo run --release --example pipe_pong -- /tmp/ipckit-ping.sock secret
//! terminal 2:  cargo run --release --example pipe_ping -- /tmp/ipckit-ping.sock secret 100000
//! ```

use std::time::{Duration, Instant};

use ipckit::connection::{Address, Client};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ipckit::init();
    let mut args = std::env::args().skip(1);
    let address = Address::parse(
        &args
            .next()
            .unwrap_or_else(|| "/tmp/ipckit-ping.sock".into()),
    )?;
    let key = args.next().unwrap_or_else(|| "secret".into());
    let count: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;

    // The server may still be starting: retry for a few seconds.
    let start = Instant::now();
    let conn = loop {
        match Client::connect(address.clone(), Some(key.as_bytes())) {
            Ok(c) => break c,
            Err(e)
                if e.kind() == ipckit::ErrorKind::NotFound
                    && start.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    };
    println!("ping: connected to {address}, authenticated; sending {count} pings of 64 bytes");

    let msg = [0x42u8; 64];
    let mut buf = Vec::with_capacity(64);
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        conn.send_bytes(&msg)?;
        conn.recv_bytes_into(&mut buf)?;
        rtts.push(t.elapsed());
        if buf != msg {
            return Err("the echo differs from the ping".into());
        }
    }
    conn.send_bytes(&[])?; // tells the server to stop
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    println!(
        "ping: round trip p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    Ok(())
}
