//! Entry points for the fuzz targets in `fuzz/` into decoders that are not
//! public: the manager's protocol as its server reads it, the connection
//! handshake on both sides, and the reports children and pool workers send.
//! Built only with the `fuzzing` feature; not part of the API.

use std::io::IoSlice;
use std::time::Duration;

use crate::codec;
use crate::error::Error;

// The cluster's envelopes, decodable without the `nats` feature (and its
// dependencies) so the fuzz crate builds lean.
#[cfg(feature = "nats")]
use crate::cluster::wire;
#[cfg(not(feature = "nats"))]
#[path = "cluster/wire.rs"]
#[allow(dead_code)]
mod wire;
use crate::pipe::{Connection, Pipe};

/// Writes `bytes` raw (no framing) to `conn`'s peer, then closes the
/// writing side, so the reader meets them and then the end of the stream.
fn feed(conn: &Connection, bytes: &[u8]) {
    if let Ok(stream) = conn.stream() {
        let mut done = 0;
        while done < bytes.len() {
            match stream.write_vectored(&[IoSlice::new(&bytes[done..])]) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
    }
    crate::pipe::shutdown_write(conn);
}

/// A manager server serving one client whose requests are `data`: a
/// genuine hello, then the input cut into frames (a length byte, then that
/// many bytes), then the end of the stream. Replies are read and dropped.
/// Every request must be answered or end the session — no panic, no hang,
/// no unbounded allocation.
pub fn manager_session(data: &[u8]) {
    let Ok((server_end, client_end)) = Pipe::duplex() else {
        return;
    };
    let hello = crate::manager::fuzz_hello();
    if client_end.send_bytes(&hello).is_err() {
        return;
    }
    let mut rest = data;
    // At most 64 requests of at most 255 bytes: they fit in the socket's
    // buffer, so writing them all first cannot block.
    for _ in 0..64 {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let take = usize::from(len).min(tail.len());
        if client_end.send_bytes(&tail[..take]).is_err() {
            break;
        }
        rest = &tail[take..];
    }
    crate::pipe::shutdown_write(&client_end);
    let drain = std::thread::spawn(move || {
        let mut buf = Vec::new();
        while client_end.recv_bytes_into(&mut buf).is_ok() {}
    });
    crate::manager::fuzz_serve(server_end);
    let _ = drain.join();
}

/// Both sides of the handshake against a peer that sends `data` (raw bytes,
/// then the end of the stream): each must succeed or fail cleanly.
pub fn handshake(data: &[u8]) {
    let key = crate::connection::AuthKey::new(b"fuzz key");
    for server_side in [true, false] {
        let Ok((ours, peer)) = Pipe::duplex() else {
            return;
        };
        feed(&peer, data);
        let timeout = Duration::from_secs(2);
        let _ = if server_side {
            crate::connection::authenticate(&ours, Some(&key), timeout)
        } else {
            crate::connection::client_handshake(&ours, Some(key.as_bytes()), timeout)
        };
    }
}

/// A child's report as `Process::join` reads it (a frame, then a `Report`,
/// then the returned value), and a pool's messages either way (decoded
/// only: a `RemoteCall` is never run).
pub fn reports(data: &[u8]) {
    let mut r = data;
    if let Ok(Some(frame)) = codec::read_frame(&mut r, 1 << 20) {
        if let Ok(report) = codec::decode::<crate::process::Report>(&frame) {
            match report {
                crate::process::Report::Returned(bytes) => {
                    let _ = codec::decode::<Result<Vec<String>, Error>>(&bytes);
                    let _ = codec::decode::<(u64, Option<i32>, Vec<u8>)>(&bytes);
                }
                crate::process::Report::Panicked { message, location } => {
                    let _ = (message.len(), location.map(|l| l.len()));
                }
                crate::process::Report::Failed(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
    let _ = codec::decode::<crate::pool::FromWorker>(data);
    let _ = codec::decode::<crate::pool::ToWorker>(data);
}

/// The decoder `ipckit inspect` uses for a published pool's counters.
pub fn pool_board(data: &[u8]) {
    if let Some((_, _, _, _, _, pids)) = crate::pool::decode_board(data) {
        assert!(pids.len() <= 64);
    }
}

/// The cluster's decoders of bytes from the network: a task envelope as a
/// worker reads it, a result envelope as a submitter reads it, and the
/// sequence number in a JetStream advisory. Each must return an error or a
/// checked value: no panic, no unbounded allocation.
pub fn cluster_wire(data: &[u8]) {
    if let Ok(t) = wire::decode_task(data) {
        assert!(wire::valid_client(&t.client));
        assert!(!t.function.is_empty() && t.function.len() <= wire::MAX_NAME);
        let _ = wire::shown(&t.function);
    }
    if let Ok(r) = wire::decode_result(data)
        && let wire::Outcome::Error { kind, message } = r.outcome
    {
        let _ = wire::outcome_error(&kind, &message);
    }
    let _ = wire::advisory_seq(data);
}
