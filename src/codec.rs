//! Encoding values (serde + postcard) and framing them on byte streams.
//!
//! A frame is a little-endian `u32` length followed by that many bytes. The
//! reader never trusts the length: anything above the caller's limit is an
//! error before any allocation, and a stream that ends inside a frame is an
//! error too.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// The largest frame the framing format can carry.
pub const MAX_FRAME: usize = u32::MAX as usize;

/// The default limit on one message, everywhere ipckit receives one: a
/// [`Queue`](crate::queue::Queue) handle (which also refuses to put a larger
/// one), a [`Connection`](crate::pipe::Connection), a
/// [`Manager`](crate::manager::Manager)'s requests and replies, and a
/// child process's result. 1 GiB; each of them has a `max_message_size`
/// setting (bytes, `usize`) to lower or raise it.
///
/// A limit is checked against a length before anything is allocated for
/// it, so a peer cannot make the receiver allocate more than the limit.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;

/// Encodes `value` with postcard.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::serialize_with_flavor(value, VecOut(Vec::new()))
        .map_err(|e| Error::new(ErrorKind::Codec, format!("cannot encode value: {e}")))
}

/// Encodes `value` into `buf`, replacing its contents and reusing its allocation.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    let taken = std::mem::take(buf);
    *buf = postcard::serialize_with_flavor(value, VecOut(taken))
        .map_err(|e| Error::new(ErrorKind::Codec, format!("cannot encode value: {e}")))?;
    Ok(())
}

/// postcard's output into a `Vec<u8>`, the same bytes as its own `Vec`
/// flavors write, but short pieces (varints, at most 10 bytes; postcard
/// hands every integer over as one) are copied with a fixed-size copy
/// instead of a `memcpy` call each: 1 250 `u64`s encode in 3.0 µs instead
/// of 7.7 µs (the arguments and results of a pool's chunked `map`; see
/// `docs/design-measurements.md`, "Encoding integers without a call per
/// varint").
struct VecOut(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecOut {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        const SHORT: usize = 16;
        let n = data.len();
        if n > SHORT {
            self.0.extend_from_slice(data);
            return Ok(());
        }
        self.0.reserve(SHORT);
        let len = self.0.len();
        // SAFETY: `reserve` made room for at least SHORT ≥ n more bytes, so
        // the n bytes after `len` are inside the allocation; `data` is
        // valid for n bytes and cannot overlap our spare capacity; the n
        // bytes are initialised by the copy before `set_len` covers them.
        unsafe {
            let dst = self.0.as_mut_ptr().add(len);
            let src = data.as_ptr();
            // One arm per length, so each copy has a constant size the
            // compiler turns into moves.
            macro_rules! copy_of {
                ($($k:literal)*) => {
                    match n {
                        $($k => std::ptr::copy_nonoverlapping(src, dst, $k),)*
                        _ => std::ptr::copy_nonoverlapping(src, dst, n),
                    }
                };
            }
            copy_of!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
            self.0.set_len(len + n);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

thread_local! {
    /// The ipckit error behind a deserialiser's custom error: a handle that
    /// failed to open while being decoded. serde's custom errors carry only
    /// text (and postcard keeps not even that), so [`de_error`] leaves the
    /// real error here for [`decode`] to return, kind and all.
    static INNER_ERROR: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// A serde deserialisation error for `e`, remembering `e` itself so that
/// [`decode`] reports it (a child whose argument holds a handle to an object
/// that is gone reports `NotFound`, not a bare `Codec`).
pub(crate) fn de_error<E: serde::de::Error>(e: Error) -> E {
    let custom = E::custom(&e);
    INNER_ERROR.with(|c| *c.borrow_mut() = Some(e));
    custom
}

/// Decodes a `T` from `bytes`; trailing bytes are an error.
///
/// If a handle inside the value cannot be opened, the error is that
/// handle's (its kind: `NotFound`, `WrongKind`, …), with the decoding as
/// context; any other failure is a [`ErrorKind::Codec`] error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    INNER_ERROR.with(|c| c.borrow_mut().take());
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| {
        let what = format!(
            "cannot decode a `{}` from {} bytes",
            std::any::type_name::<T>(),
            bytes.len()
        );
        match INNER_ERROR.with(|c| c.borrow_mut().take()) {
            Some(inner) => inner.context(what),
            None => Error::new(ErrorKind::Codec, format!("{what}: {e}")),
        }
    })?;
    if !rest.is_empty() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "{} unexpected bytes after a `{}`",
                rest.len(),
                std::any::type_name::<T>()
            ),
        ));
    }
    Ok(value)
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        Error::new(
            ErrorKind::LimitExceeded,
            format!("frame of {} bytes exceeds the 4 GiB limit", payload.len()),
        )
    })?;
    w.write_all(&len.to_le_bytes())
        .and_then(|()| w.write_all(payload))
        .and_then(|()| w.flush())
        .map_err(|e| Error::io("cannot write frame", e))
}

/// Reads one frame of at most `limit` bytes. `Ok(None)` on a clean end of
/// stream before the frame starts.
pub fn read_frame(r: &mut impl Read, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::Codec,
                    format!("stream ended inside a frame header ({got} of 4 bytes)"),
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("cannot read frame", e)),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!("frame of {len} bytes exceeds the limit of {limit}"),
        ));
    }
    let mut buf = Vec::new();
    // Grow as data arrives rather than trusting `len` for the allocation.
    let read = r
        .take(len as u64)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read frame", e))?;
    if read < len {
        return Err(Error::new(
            ErrorKind::Codec,
            format!("stream ended inside a frame ({read} of {len} bytes)"),
        ));
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 10).unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 10).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r, 10).unwrap(), None);
        let v: (u32, String) = decode(&encode(&(7u32, "x".to_owned())).unwrap()).unwrap();
        assert_eq!(v, (7, "x".to_owned()));
    }

    #[test]
    fn rejects_bad_frames() {
        let mut r: &[u8] = &[5, 0, 0, 0, 1, 2];
        assert_eq!(read_frame(&mut r, 10).unwrap_err().kind(), ErrorKind::Codec);
        let mut r: &[u8] = &[5, 0];
        assert_eq!(read_frame(&mut r, 10).unwrap_err().kind(), ErrorKind::Codec);
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            read_frame(&mut r, 1 << 20).unwrap_err().kind(),
            ErrorKind::LimitExceeded
        );
        assert_eq!(
            decode::<u8>(&[1, 2]).unwrap_err().kind(),
            ErrorKind::Codec,
            "trailing bytes"
        );
        assert_eq!(
            decode::<String>(&[5, b'a']).unwrap_err().kind(),
            ErrorKind::Codec
        );
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct AsBytes(#[serde(with = "serde_bytes")] Vec<u8>);

    proptest! {
        /// Internal messages carry encoded payloads as `serde_bytes` (one
        /// copy, not a serializer call per byte): postcard writes the same
        /// bytes either way, so both sides, old corpora and fuzz seeds agree.
        #[test]
        fn bytes_fields_encode_as_a_byte_sequence_does(v in proptest::collection::vec(any::<u8>(), 0..300)) {
            let plain = encode(&v).unwrap();
            prop_assert_eq!(&encode(&AsBytes(v.clone())).unwrap(), &plain);
            prop_assert_eq!(decode::<AsBytes>(&plain).unwrap(), AsBytes(v));
        }

        /// `VecOut` writes exactly what postcard's own flavor writes.
        #[test]
        fn the_output_flavor_writes_postcards_bytes(
            ints in proptest::collection::vec(any::<u64>(), 0..200),
            small in proptest::collection::vec(any::<i16>(), 0..50),
            text in ".{0,40}",
            raw in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let value = (ints, small, text, AsBytes(raw), Some(-3i128), 1.5f64);
            let ours = encode(&value).unwrap();
            prop_assert_eq!(&ours, &postcard::to_allocvec(&value).unwrap());
            let mut buf = vec![9u8; 3];
            encode_into(&value, &mut buf).unwrap();
            prop_assert_eq!(&buf, &ours);
        }

        #[test]
        fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), limit in 0usize..32) {
            let mut r = &bytes[..];
            while let Ok(Some(frame)) = read_frame(&mut r, limit) {
                prop_assert!(frame.len() <= limit);
            }
            let _ = decode::<(u64, String, Vec<u8>)>(&bytes);
        }

        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5)) {
            let mut buf = Vec::new();
            for p in &payloads {
                write_frame(&mut buf, p).unwrap();
            }
            let mut r = &buf[..];
            for p in &payloads {
                let got = read_frame(&mut r, 40).unwrap().unwrap();
                prop_assert_eq!(&got, p);
            }
            prop_assert_eq!(read_frame(&mut r, 40).unwrap(), None);
        }
    }
}
