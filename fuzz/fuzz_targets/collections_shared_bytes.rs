//! A SharedMap and a ShareableList whose bytes another process overwrote:
//! slots, counts, offsets, lengths and the undo record come from the
//! fuzzer. Every call must answer with a value or an error; then fresh
//! handles open the bytes, header included.
#![no_main]

use ipckit::Segment;
use ipckit::collections::{ShareableList, SharedMap};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 128;
/// The header's state word: kept "ready" in forged headers (one not ready
/// is waited for, up to 2 s, as a creator still writing it would be).
const STATE_OFFSET: usize = 8;

fn cycle(data: &[u8], len: usize) -> Vec<u8> {
    (0..len).map(|i| data[i % data.len()]).collect()
}

/// `data` cycled over a whole object, with `seg`'s state word.
fn forged_object(seg: &Segment, data: &[u8]) -> Segment {
    let mut all = cycle(data, seg.len());
    let mut state = [0u8; 8];
    seg.read_at(STATE_OFFSET, &mut state).unwrap();
    all[STATE_OFFSET..STATE_OFFSET + 8].copy_from_slice(&state);
    let raw = Segment::new(seg.len()).unwrap();
    raw.write_at(0, &all).unwrap();
    raw
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let selector = data[0];
    let data = &data[1..];
    if data.is_empty() {
        return;
    }
    if selector & 1 == 0 {
        let m = SharedMap::<u64, u64>::new(16).unwrap();
        let _ = m.insert(1, 2);
        let seg = m.segment();
        seg.write_at(HEADER, &cycle(data, seg.len() - HEADER))
            .unwrap();
        for k in 0..4u64 {
            let _ = m.get(&k);
            let _ = m.insert(k, k);
            let _ = m.remove(&(k + 1));
        }
        let _ = m.len();
        let _ = m.to_vec();
        let raw = forged_object(seg, data);
        if let Ok(m2) = SharedMap::<u64, u64>::open_in(&raw, 0) {
            let _ = m2.to_vec();
        }
    } else {
        let l = ShareableList::new([1i64, 2, 3]).unwrap();
        let seg = l.segment();
        seg.write_at(HEADER, &cycle(data, seg.len() - HEADER))
            .unwrap();
        for i in 0..4 {
            let _ = l.get(i);
            let _ = l.set(i, i as i64);
        }
        let _ = l.len();
        let _ = l.to_vec();
        let raw = forged_object(seg, data);
        if let Ok(l2) = ShareableList::open_in(&raw, 0) {
            let _ = l2.to_vec();
        }
    }
});
