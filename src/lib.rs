//! # ipckit — Python's `multiprocessing`, rebuilt for Rust on shared memory
//!
//! ipckit gives Rust programs the toolbox Python's `multiprocessing` gives
//! Python programs, built on shared memory, typed, and robust when a process
//! dies at any instruction.
//!
//! This release provides the foundation:
//!
//! | Python | ipckit |
//! |---|---|
//! | `shared_memory.SharedMemory(name, create=True, size=n)` | [`Segment::create`]`(name, n)` |
//! | `shared_memory.SharedMemory(name)` | [`Segment::open`]`(name)` |
//! | `Lock()` | [`sync::Mutex`]`<T>` (the lock owns the data, as in Rust) |
//! | `Condition()` | [`sync::Mutex`] + [`sync::Condvar`] |
//! | `Semaphore(n)` / `BoundedSemaphore(n)` | [`sync::Semaphore`] |
//! | `Event()` | [`sync::Event`] |
//! | `Barrier(n)` | [`sync::Barrier`] |
//! | `Value('Q', 0)` | [`Value`]`<u64>` |
//! | `Array('d', 10)` | [`Array`]`<f64>` |
//!
//! ## A tour
//!
//! **Segments.** A named [`Segment`] is a POSIX shared-memory object: the
//! segment `"jobs"` is `/dev/shm/jobs`, the object Python's
//! `SharedMemory("jobs")` attaches to. The creator owns the name and unlinks
//! it on drop (unless it calls [`Segment::persist`]). [`Segment::new`]
//! makes a nameless segment that leaks nothing even if every process using it
//! is killed.
//!
//! **Objects.** Every ipckit object in shared memory (a `Mutex`, a `Value`,
//! …) starts with a header that records its kind, element type and size, so
//! opening a `Mutex<u32>` as a `Semaphore` or as a `Mutex<u64>` is a clear
//! [`Error`], never undefined behaviour. Each object can be named
//! (`create`/`open`/`open_or_create`), anonymous (`new`), or embedded at an
//! offset in a segment you lay out (`create_in`/`open_in`).
//!
//! **Passing handles to other processes.** Every handle implements serde's
//! `Serialize` and `Deserialize`: encode it, send the bytes (a command-line
//! argument, a pipe, a queue), and the receiver's decoded handle opens the
//! same object. Anonymous objects travel too.
//!
//! **Crashes.** A process that dies while holding a [`sync::Mutex`] does not
//! deadlock the others: the next locker gets [`sync::LockError::OwnerDied`]
//! with the guard, repairs the data and calls `mark_consistent()`. Semaphore
//! permits of dead processes are given back. Waits never wedge on a dead peer.
//!
//! ```
//! use ipckit::{Value, sync::Event};
//! # fn main() -> ipckit::Result<()> {
//! let counter = Value::new(0u64)?;
//! let done = Event::new()?;
//! // Send `counter` and `done` to a child process (they are serde values);
//! // here we play both sides.
//! *counter.lock()? += 41;
//! counter.update(|c| *c += 1)?;
//! done.set();
//! done.wait();
//! assert_eq!(counter.get()?, 42);
//! # Ok(()) }
//! ```
//!
//! **Operations.** [`admin`] lists, inspects and cleans up the objects in
//! `/dev/shm` (stale ones whose creator died), as the `ipckit` command-line
//! tool does (`cargo install ipckit`, feature `cli`, on by default).
//!
//! ## Platform
//!
//! Linux (x86_64, aarch64) with `/dev/shm`: ipckit uses futexes, `memfd` and
//! glibc's robust process-shared mutexes.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod admin;
pub mod codec;
pub mod collections;
pub mod connection;
mod deadline;
pub mod error;
mod handoff;
pub mod layout;
pub mod manager;
mod object;
pub mod pipe;
mod platform;
pub mod pool;
pub mod process;
pub mod queue;
pub mod segment;
pub mod sync;
mod value;

pub use error::{Error, ErrorKind, Result};
pub use layout::ShmSafe;
pub use process::init;
pub use segment::{CreationMode, Segment, SegmentBuilder};
pub use value::{Array, Value};
