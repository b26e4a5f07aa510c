//! A queue whose shared state and ring another process overwrote: every
//! byte after the object header (locks, positions, counters, frames) comes
//! from the fuzzer. Consumers and producers must answer with a value or an
//! error — never crash, read outside the ring, hang or allocate without
//! bound. Then a fresh handle opens the bytes (header included) as a queue.
#![no_main]

use ipckit::Segment;
use ipckit::queue::Queue;
use libfuzzer_sys::fuzz_target;

/// The object header's length: the shared state starts after it.
const HEADER: usize = 128;
/// Where the header's state word lies (see `ipckit::layout`).
const STATE_OFFSET: usize = 8;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let q = Queue::<()>::new(4096).unwrap();
    // A real message first, so that some frames are genuine.
    let _ = q.try_put_bytes(b"a genuine message");
    let seg = q.segment();
    let len = seg.len();
    // Overwrite from after the header, cycling the input over the object.
    let mut forged = vec![0u8; len - HEADER];
    for (i, b) in forged.iter_mut().enumerate() {
        *b = data[i % data.len()];
    }
    seg.write_at(HEADER, &forged).unwrap();
    let mut buf = Vec::new();
    for _ in 0..4 {
        let _ = q.try_get_bytes_into(&mut buf);
        let _ = q.try_put_bytes(&data[..data.len().min(600)]);
    }
    let _ = q.len();
    let _ = q.used_bytes();
    // The header too: opening must validate it. Its state word stays
    // "ready" (a header not ready is waited for, up to 2 s, as a creator
    // still writing it would be: correct, but it would slow the fuzzer).
    let raw = Segment::new(len).unwrap();
    let mut all = vec![0u8; len];
    for (i, b) in all.iter_mut().enumerate() {
        *b = data[i % data.len()];
    }
    let mut state = [0u8; 8];
    seg.read_at(STATE_OFFSET, &mut state).unwrap();
    all[STATE_OFFSET..STATE_OFFSET + 8].copy_from_slice(&state);
    raw.write_at(0, &all).unwrap();
    if let Ok(q2) = Queue::<()>::open_in(&raw, 0) {
        let _ = q2.try_get_bytes_into(&mut buf);
    }
});
