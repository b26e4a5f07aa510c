//! The only code in ipckit that calls the operating system.
//!
//! Everything above this module works with `io::Result`s and the small set of
//! primitives exported here: POSIX shared memory, `memfd`, mappings, futex
//! wait/wake on shared (never `FUTEX_PRIVATE_FLAG`) words,
//! process and thread identity and liveness — and one CPU hint (`cpu`).

#[cfg(not(target_os = "linux"))]
compile_error!(
    "ipckit currently supports Linux only (it needs futexes, memfd, membarrier and /proc)"
);

mod cpu;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

pub(crate) use cpu::prefetch_for_write;
