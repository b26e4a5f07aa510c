//! Both sides of the connection handshake against a peer that sends the
//! fuzzer's bytes and hangs up: success or a clean error, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipckit::fuzzing::handshake(data);
});
