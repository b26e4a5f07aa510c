//! A manager server serving one authenticated client whose requests are
//! the fuzzer's bytes (cut into frames): every request is answered or ends
//! the session — no panic, no hang, no unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipckit::fuzzing::manager_session(data);
});
