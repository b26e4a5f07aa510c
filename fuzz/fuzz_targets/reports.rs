//! What a child process sends back to `join` (a frame holding a report and
//! the returned value) and what pool workers and pools send each other:
//! decoded into values or errors, never a crash or an allocation beyond
//! the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipckit::fuzzing::reports(data);
});
