//! Every kind of object (Value, Array, Mutex, Semaphore, Event, Barrier,
//! Condvar, Queue) with bytes another process overwrote: the first input
//! byte picks the kind, the rest overwrite the object from after its header
//! (cycled). The object is used through its open handle, then opened afresh
//! with the header overwritten too (its state word kept "ready"). Values or
//! errors, each wait within its deadline — never a crash or a hang. The
//! same objects and operations as `tests/untrusted.rs`.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/forge.rs"]
mod forge;

use forge::{HEADER, Object, STATE_OFFSET};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    if bytes.is_empty() {
        return;
    }
    let kind = usize::from(kind);
    let (obj, seg) = Object::create(kind);
    let len = seg.len();
    let forged: Vec<u8> = (HEADER..len)
        .map(|i| bytes[(i - HEADER) % bytes.len()])
        .collect();
    seg.write_at(HEADER, &forged).unwrap();
    let longest = obj.exercise(Duration::from_millis(1));
    assert!(longest < Duration::from_secs(2), "{longest:?}");
    // The header too, on a copy: opening must validate it.
    let copy = ipckit::Segment::new(len).unwrap();
    let mut all: Vec<u8> = (0..len).map(|i| bytes[i % bytes.len()]).collect();
    let mut state = [0u8; 8];
    seg.read_at(STATE_OFFSET, &mut state).unwrap();
    all[STATE_OFFSET..STATE_OFFSET + 8].copy_from_slice(&state);
    copy.write_at(0, &all).unwrap();
    if let Some(again) = Object::open(kind, &copy) {
        let longest = again.exercise(Duration::from_millis(1));
        assert!(longest < Duration::from_secs(2), "{longest:?}");
    }
});
