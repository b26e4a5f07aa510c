//! The cluster's envelopes (tasks, results, advisories) as read from the
//! network by workers and submitters.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipckit::fuzzing::cluster_wire(data);
});
