//! `ipckit inspect` (and `watch`) over objects whose bytes another process
//! overwrote: a genuine named object of a kind the first byte picks, its
//! state and data after the header replaced by the rest (cycled); then the
//! tool's decoders (queue state, lock words, a value's or array's contents,
//! a published pool's counters) and its text and JSON renderings. Values or
//! errors, never a crash, a hang or an allocation beyond the object.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use ipckit::admin;
use ipckit::queue::Queue;
use ipckit::sync::Mutex;
use ipckit::{Array, Segment, Value};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 128;

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "ipckit-fuzz-inspect-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn forge(name: &str, bytes: &[u8]) {
    let seg = Segment::builder(name)
        .creation_mode(ipckit::CreationMode::OpenExisting)
        .build()
        .unwrap();
    let forged: Vec<u8> = (HEADER..seg.len())
        .map(|i| bytes[(i - HEADER) % bytes.len()])
        .collect();
    seg.write_at(HEADER, &forged).unwrap();
}

fuzz_target!(|data: &[u8]| {
    ipckit::fuzzing::pool_board(data);
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    if bytes.is_empty() {
        return;
    }
    let name = unique();
    // Each kind stays alive (and named) until the end of this run.
    let _keep: Box<dyn std::any::Any> = match kind % 4 {
        0 => Box::new(Value::create(&name, 7u64).unwrap()),
        1 => Box::new(Array::create(&name, &[1u16, 2, 3, 4, 5]).unwrap()),
        2 => Box::new(Mutex::create(&name, 9u32).unwrap()),
        _ => Box::new(Queue::<u8>::create(&name, 4096).unwrap()),
    };
    forge(&name, bytes);
    if let Ok(i) = admin::inspect(&name) {
        let _ = admin::text::inspection_text(&i);
        let _ = i.to_json();
    }
    let _ = admin::queue_info(&name);
});
