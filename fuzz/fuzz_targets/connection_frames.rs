//! A peer that writes arbitrary bytes on a connection: every length prefix
//! and body comes from the fuzzer. Receiving must give messages or errors
//! (over the limit, truncated, closed) — never crash or allocate beyond
//! the limit.
#![no_main]

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use ipckit::pipe::Pipe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Stays within the socket's buffer, so the write does not wait for us.
    let data = &data[..data.len().min(64 << 10)];
    let (mut rx, tx) = Pipe::duplex().unwrap();
    // A small limit, so that huge lengths are refused and big ones tested.
    rx.set_max_message_size(1 << 20);
    {
        // SAFETY: `tx` keeps the descriptor open for this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(tx.as_raw_fd()) };
        let mut raw = UnixStream::from(fd.try_clone_to_owned().unwrap());
        raw.write_all(data).unwrap();
    }
    drop(tx);
    let mut buf = Vec::new();
    for _ in 0..=data.len() / 4 {
        if rx.recv_bytes_into(&mut buf).is_err() {
            break;
        }
        assert!(buf.len() <= 1 << 20);
    }
});
