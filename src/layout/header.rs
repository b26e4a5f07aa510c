//! The object header: the first 128 bytes of every ipckit object.
//!
//! The header is a byte format with fixed offsets, little-endian on the
//! platforms ipckit supports (native byte order), decoded from a *copy* of
//! the bytes, so a process never holds a reference into memory that another
//! process may be writing, and a garbage header is a decoding error, never
//! undefined behaviour.
//!
//! | offset | size | field | notes |
//! |---:|---:|---|---|
//! | 0 | 8 | magic | `b"ipckit\0\x01"` |
//! | 8 | 4 | state | atomic: 0 empty, `STATE_INIT`, `STATE_READY` |
//! | 12 | 2 | layout version | [`LAYOUT_VERSION`] |
//! | 14 | 2 | header length | [`HEADER_LEN`] |
//! | 16 | 4 | kind | [`ObjectKind`] code |
//! | 20 | 4 | flags | reserved, 0 |
//! | 24 | 8 | total length | bytes of the object, header included |
//! | 32 | 8 | type hash | FNV-1a of the element type's name |
//! | 40 | 8 | type size | |
//! | 48 | 4 | type alignment | |
//! | 52 | 4 | creator pid | |
//! | 56 | 8 | creator start time | clock ticks since boot, tells a recycled pid apart |
//! | 64 | 8 | created at | nanoseconds since the Unix epoch |
//! | 72 | 8 | parameter | kind-specific (array length, semaphore slots, …) |
//! | 80 | 40 | type name | UTF-8, truncated, NUL-padded |
//! | 120 | 8 | checksum | FNV-1a over bytes 0..8 and 12..120 |
//!
//! # The state word
//!
//! | value | meaning |
//! |---|---|
//! | 0 | fresh memory: nobody has written a header yet |
//! | `STATE_INIT` | the creator wrote the header and is initialising the payload |
//! | `STATE_READY` | initialised; published by a Release store, read with Acquire (SYNC POINT "publish") |
//!
//! Creation: `O_EXCL` create → write header with `STATE_INIT` → initialise the
//! payload → Release-store `STATE_READY`. Opening: wait (bounded) for an
//! Acquire load to see `STATE_READY` → copy the header → [`Header::decode`]
//! → [`Header::validate`]. That protocol lives in `segment::object`.

use std::fmt;

use super::{TypeFingerprint, fnv1a, fnv1a_continue};

/// Length of the header in bytes; payloads start at or after this offset.
pub const HEADER_LEN: usize = 128;
/// The magic number at offset 0.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ipckit\0\x01");
/// The layout version this build writes and accepts.
///
/// 2: every futex word a process sleeps on is a `WaitCell` (sequence,
/// registrations with an epoch, flags), so objects of version 1 are refused.
/// 3: a `WaitCell`'s registration word is 64 bits and counts spinners too.
/// 4: locks are ipckit's own (holder word, flag, `WaitCell`), no longer
/// glibc robust mutexes.
pub const LAYOUT_VERSION: u16 = 4;
/// Offset of the atomic state word.
pub const STATE_OFFSET: usize = 8;
/// State: header written, payload being initialised.
pub const STATE_INIT: u32 = 0x5449_4e49; // "INIT"
/// State: ready for use.
pub const STATE_READY: u32 = 0x5944_4552; // "REDY"
/// Bytes of the type name kept in the header.
pub const TYPE_NAME_LEN: usize = 40;
/// Headers must start at a multiple of this (their words are 8-byte atomics
/// and payloads are cache-line aligned).
pub const HEADER_ALIGN: usize = 64;

const OFF_VERSION: usize = 12;
const OFF_HEADER_LEN: usize = 14;
const OFF_KIND: usize = 16;
const OFF_FLAGS: usize = 20;
const OFF_TOTAL_LEN: usize = 24;
const OFF_TYPE_HASH: usize = 32;
const OFF_TYPE_SIZE: usize = 40;
const OFF_TYPE_ALIGN: usize = 48;
const OFF_CREATOR_PID: usize = 52;
const OFF_CREATOR_START: usize = 56;
const OFF_CREATED_AT: usize = 64;
const OFF_PARAM: usize = 72;
const OFF_TYPE_NAME: usize = 80;
const OFF_CHECKSUM: usize = 120;

/// The kinds of object ipckit places in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// [`crate::sync::Mutex`].
    Mutex,
    /// [`crate::sync::Condvar`].
    Condvar,
    /// [`crate::sync::Semaphore`].
    Semaphore,
    /// [`crate::sync::Event`].
    Event,
    /// [`crate::sync::Barrier`].
    Barrier,
    /// [`crate::Value`].
    Value,
    /// [`crate::Array`].
    Array,
    /// [`crate::queue::Queue`].
    Queue,
    /// [`crate::queue::JoinableQueue`].
    JoinableQueue,
    /// [`crate::collections::SharedMap`].
    SharedMap,
    /// [`crate::collections::ShareableList`].
    ShareableList,
    /// The counters a [`crate::pool::ProcessPool`] publishes for the
    /// `ipckit` tool ([`ProcessPoolBuilder::publish`](crate::pool::ProcessPoolBuilder::publish)).
    Pool,
}

impl ObjectKind {
    /// Every kind, for lookups.
    pub const ALL: [ObjectKind; 12] = [
        ObjectKind::Mutex,
        ObjectKind::Condvar,
        ObjectKind::Semaphore,
        ObjectKind::Event,
        ObjectKind::Barrier,
        ObjectKind::Value,
        ObjectKind::Array,
        ObjectKind::Queue,
        ObjectKind::JoinableQueue,
        ObjectKind::SharedMap,
        ObjectKind::ShareableList,
        ObjectKind::Pool,
    ];

    /// The code stored in headers.
    pub const fn code(self) -> u32 {
        match self {
            ObjectKind::Mutex => 1,
            ObjectKind::Condvar => 2,
            ObjectKind::Semaphore => 3,
            ObjectKind::Event => 4,
            ObjectKind::Barrier => 5,
            ObjectKind::Value => 6,
            ObjectKind::Array => 7,
            ObjectKind::Queue => 8,
            ObjectKind::JoinableQueue => 9,
            ObjectKind::SharedMap => 10,
            ObjectKind::ShareableList => 11,
            ObjectKind::Pool => 12,
        }
    }

    /// The kind with this code, if known to this build.
    pub fn from_code(code: u32) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The type name users see (`"Mutex"`, `"Queue"`, …).
    pub const fn name(self) -> &'static str {
        match self {
            ObjectKind::Mutex => "Mutex",
            ObjectKind::Condvar => "Condvar",
            ObjectKind::Semaphore => "Semaphore",
            ObjectKind::Event => "Event",
            ObjectKind::Barrier => "Barrier",
            ObjectKind::Value => "Value",
            ObjectKind::Array => "Array",
            ObjectKind::Queue => "Queue",
            ObjectKind::JoinableQueue => "JoinableQueue",
            ObjectKind::SharedMap => "SharedMap",
            ObjectKind::ShareableList => "ShareableList",
            ObjectKind::Pool => "Pool",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded header (everything but the state word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Layout version.
    pub version: u16,
    /// Object kind code (see [`ObjectKind::from_code`]).
    pub kind_code: u32,
    /// Reserved flags.
    pub flags: u32,
    /// Bytes of the object, header included.
    pub total_len: u64,
    /// Hash of the element type's name.
    pub type_hash: u64,
    /// Element type size.
    pub type_size: u64,
    /// Element type alignment.
    pub type_align: u32,
    /// The creating process.
    pub creator_pid: u32,
    /// The creating process's start time (clock ticks since boot).
    pub creator_start_time: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_nanos: u64,
    /// Kind-specific parameter.
    pub param: u64,
    /// Element type name, truncated and NUL-padded.
    pub type_name: [u8; TYPE_NAME_LEN],
}

/// Why header bytes were rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header are available.
    Truncated {
        /// Bytes the object needs.
        needed: u64,
        /// Bytes actually there.
        available: u64,
    },
    /// Offset 0 does not hold the ipckit magic.
    BadMagic(u64),
    /// The header length field is not [`HEADER_LEN`].
    BadHeaderLen(u16),
    /// Written by another layout version.
    Version(u16),
    /// The checksum does not match the contents.
    Checksum,
    /// A length field is impossible.
    BadLength(u64),
    /// Another kind of object.
    WrongKind {
        /// Kind code found.
        found: u32,
        /// Kind expected.
        expected: ObjectKind,
    },
    /// Another element type.
    WrongType {
        /// Type name found (possibly truncated).
        found: String,
        /// Size found.
        found_size: u64,
        /// Type name expected.
        expected: &'static str,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated { needed, available } => write!(
                f,
                "segment is truncated: the object needs {needed} bytes but {available} are mapped"
            ),
            HeaderError::BadMagic(m) => write!(
                f,
                "not an ipckit object (magic {m:#018x}); it may be a plain segment or garbage"
            ),
            HeaderError::BadHeaderLen(n) => write!(f, "header length {n} is not {HEADER_LEN}"),
            HeaderError::Version(v) => write!(
                f,
                "object has layout version {v}, this build of ipckit understands {LAYOUT_VERSION}"
            ),
            HeaderError::Checksum => write!(f, "header checksum mismatch (corrupt header)"),
            HeaderError::BadLength(n) => write!(f, "header claims an impossible length {n}"),
            HeaderError::WrongKind { found, expected } => match ObjectKind::from_code(*found) {
                Some(k) => write!(f, "segment holds a {k}, not a {expected}"),
                None => write!(
                    f,
                    "segment holds an unknown object kind {found}, not a {expected}"
                ),
            },
            HeaderError::WrongType {
                found,
                found_size,
                expected,
            } => write!(
                f,
                "element type is `{found}` ({found_size} bytes), not `{expected}`"
            ),
        }
    }
}

fn put_u16(b: &mut [u8; HEADER_LEN], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8; HEADER_LEN], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8; HEADER_LEN], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8; HEADER_LEN], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn get_u32(b: &[u8; HEADER_LEN], off: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8; HEADER_LEN], off: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// The checksum of a header's bytes (all but the state word and the checksum).
pub fn checksum(b: &[u8; HEADER_LEN]) -> u64 {
    fnv1a_continue(
        fnv1a(&b[..STATE_OFFSET]),
        &b[STATE_OFFSET + 4..OFF_CHECKSUM],
    )
}

impl Header {
    /// A header for a new object of `kind` holding elements of type `ty`.
    pub fn new(kind: ObjectKind, ty: TypeFingerprint, total_len: u64, param: u64) -> Header {
        let mut type_name = [0u8; TYPE_NAME_LEN];
        // Keep the *end* of long names: `alloc::vec::Vec<my_crate::Point>` is
        // more recognisable by its tail than by its head.
        let name = ty.name.as_bytes();
        let tail = &name[name.len().saturating_sub(TYPE_NAME_LEN)..];
        type_name[..tail.len()].copy_from_slice(tail);
        Header {
            version: LAYOUT_VERSION,
            kind_code: kind.code(),
            flags: 0,
            total_len,
            type_hash: ty.name_hash(),
            type_size: ty.size,
            type_align: ty.align,
            creator_pid: 0,
            creator_start_time: 0,
            created_unix_nanos: 0,
            param,
            type_name,
        }
    }

    /// The element type name as stored (possibly truncated at the front).
    pub fn type_name(&self) -> String {
        let end = self
            .type_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(TYPE_NAME_LEN);
        String::from_utf8_lossy(&self.type_name[..end]).into_owned()
    }

    /// The object kind, if this build knows it.
    pub fn kind(&self) -> Option<ObjectKind> {
        ObjectKind::from_code(self.kind_code)
    }

    /// The header's bytes, with the state word set to `STATE_INIT` and the
    /// checksum filled in.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put_u64(&mut b, 0, MAGIC);
        put_u32(&mut b, STATE_OFFSET, STATE_INIT);
        put_u16(&mut b, OFF_VERSION, self.version);
        put_u16(&mut b, OFF_HEADER_LEN, HEADER_LEN as u16);
        put_u32(&mut b, OFF_KIND, self.kind_code);
        put_u32(&mut b, OFF_FLAGS, self.flags);
        put_u64(&mut b, OFF_TOTAL_LEN, self.total_len);
        put_u64(&mut b, OFF_TYPE_HASH, self.type_hash);
        put_u64(&mut b, OFF_TYPE_SIZE, self.type_size);
        put_u32(&mut b, OFF_TYPE_ALIGN, self.type_align);
        put_u32(&mut b, OFF_CREATOR_PID, self.creator_pid);
        put_u64(&mut b, OFF_CREATOR_START, self.creator_start_time);
        put_u64(&mut b, OFF_CREATED_AT, self.created_unix_nanos);
        put_u64(&mut b, OFF_PARAM, self.param);
        b[OFF_TYPE_NAME..OFF_TYPE_NAME + TYPE_NAME_LEN].copy_from_slice(&self.type_name);
        let sum = checksum(&b);
        put_u64(&mut b, OFF_CHECKSUM, sum);
        b
    }

    /// Decodes header bytes, checking magic, header length, version and
    /// checksum. The state word is not looked at.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        let magic = get_u64(b, 0);
        if magic != MAGIC {
            return Err(HeaderError::BadMagic(magic));
        }
        let header_len = get_u16(b, OFF_HEADER_LEN);
        let version = get_u16(b, OFF_VERSION);
        // The version is checked before the checksum: a future version may
        // checksum differently, and "wrong version" is the more useful message.
        if version != LAYOUT_VERSION {
            return Err(HeaderError::Version(version));
        }
        if header_len as usize != HEADER_LEN {
            return Err(HeaderError::BadHeaderLen(header_len));
        }
        if get_u64(b, OFF_CHECKSUM) != checksum(b) {
            return Err(HeaderError::Checksum);
        }
        let mut type_name = [0u8; TYPE_NAME_LEN];
        type_name.copy_from_slice(&b[OFF_TYPE_NAME..OFF_TYPE_NAME + TYPE_NAME_LEN]);
        Ok(Header {
            version,
            kind_code: get_u32(b, OFF_KIND),
            flags: get_u32(b, OFF_FLAGS),
            total_len: get_u64(b, OFF_TOTAL_LEN),
            type_hash: get_u64(b, OFF_TYPE_HASH),
            type_size: get_u64(b, OFF_TYPE_SIZE),
            type_align: get_u32(b, OFF_TYPE_ALIGN),
            creator_pid: get_u32(b, OFF_CREATOR_PID),
            creator_start_time: get_u64(b, OFF_CREATOR_START),
            created_unix_nanos: get_u64(b, OFF_CREATED_AT),
            param: get_u64(b, OFF_PARAM),
            type_name,
        })
    }

    /// Checks that this header describes a `kind` of `ty` elements that fits
    /// in `available` bytes.
    pub fn validate(
        &self,
        kind: ObjectKind,
        ty: TypeFingerprint,
        available: u64,
    ) -> Result<(), HeaderError> {
        if self.kind_code != kind.code() {
            return Err(HeaderError::WrongKind {
                found: self.kind_code,
                expected: kind,
            });
        }
        if self.type_hash != ty.name_hash()
            || self.type_size != ty.size
            || self.type_align != ty.align
        {
            return Err(HeaderError::WrongType {
                found: self.type_name(),
                found_size: self.type_size,
                expected: ty.name,
            });
        }
        if self.total_len < HEADER_LEN as u64 {
            return Err(HeaderError::BadLength(self.total_len));
        }
        if self.total_len > available {
            return Err(HeaderError::Truncated {
                needed: self.total_len,
                available,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Header {
        let mut h = Header::new(ObjectKind::Value, TypeFingerprint::of::<u64>(), 4096, 7);
        h.creator_pid = 42;
        h.creator_start_time = 1234;
        h.created_unix_nanos = 99;
        h
    }

    #[test]
    fn round_trips() {
        let h = sample();
        let b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        assert_eq!(h.type_name(), "u64");
        assert_eq!(h.kind(), Some(ObjectKind::Value));
        h.validate(ObjectKind::Value, TypeFingerprint::of::<u64>(), 4096)
            .unwrap();
    }

    #[test]
    fn state_word_is_not_checksummed() {
        let mut b = sample().encode();
        b[STATE_OFFSET..STATE_OFFSET + 4].copy_from_slice(&STATE_READY.to_le_bytes());
        assert!(Header::decode(&b).is_ok());
    }

    #[test]
    fn rejects_mismatches() {
        let h = sample();
        assert!(matches!(
            h.validate(ObjectKind::Mutex, TypeFingerprint::of::<u64>(), 4096),
            Err(HeaderError::WrongKind { .. })
        ));
        let e = h
            .validate(ObjectKind::Value, TypeFingerprint::of::<i64>(), 4096)
            .unwrap_err();
        assert_eq!(e.to_string(), "element type is `u64` (8 bytes), not `i64`");
        assert!(matches!(
            h.validate(ObjectKind::Value, TypeFingerprint::of::<u64>(), 4095),
            Err(HeaderError::Truncated { .. })
        ));
        let mut b = h.encode();
        b[0] ^= 1;
        assert!(matches!(Header::decode(&b), Err(HeaderError::BadMagic(_))));
        let mut b = h.encode();
        b[OFF_PARAM] ^= 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::Checksum));
        let mut b = h.encode();
        b[OFF_VERSION] = 9;
        assert_eq!(Header::decode(&b), Err(HeaderError::Version(9)));
    }

    #[test]
    fn wrong_kind_message_names_both_kinds() {
        let h = Header::new(ObjectKind::Mutex, TypeFingerprint::of::<u8>(), 256, 0);
        let e = h
            .validate(ObjectKind::Semaphore, TypeFingerprint::of::<u8>(), 256)
            .unwrap_err();
        assert_eq!(e.to_string(), "segment holds a Mutex, not a Semaphore");
    }

    #[test]
    fn long_type_names_keep_their_tail() {
        let ty = TypeFingerprint {
            name: "a::very::long::module::path::that::goes::on::and::on::Point",
            size: 16,
            align: 8,
        };
        let h = Header::new(ObjectKind::Value, ty, 256, 0);
        assert!(h.type_name().ends_with("::Point"));
        assert_eq!(h.type_name().len(), TYPE_NAME_LEN);
    }

    #[test]
    fn kind_codes_are_unique() {
        for k in ObjectKind::ALL {
            assert_eq!(ObjectKind::from_code(k.code()), Some(k));
        }
        assert_eq!(ObjectKind::from_code(0), None);
    }

    proptest! {
        // Arbitrary bytes never panic the decoder or validator.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN), avail in any::<u64>()) {
            let mut b = [0u8; HEADER_LEN];
            b.copy_from_slice(&bytes);
            if let Ok(h) = Header::decode(&b) {
                let _ = h.validate(ObjectKind::Value, TypeFingerprint::of::<u64>(), avail);
                let _ = h.type_name();
            }
        }

        // Garbage with a valid magic and version still fails the checksum.
        #[test]
        fn garbage_with_magic_is_rejected(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN)) {
            let mut b = [0u8; HEADER_LEN];
            b.copy_from_slice(&bytes);
            b[..8].copy_from_slice(&MAGIC.to_le_bytes());
            b[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
            b[OFF_HEADER_LEN..OFF_HEADER_LEN + 2].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
            let sum = checksum(&b);
            prop_assume!(get_u64(&b, OFF_CHECKSUM) != sum);
            prop_assert_eq!(Header::decode(&b), Err(HeaderError::Checksum));
        }

        // Flipping any bit outside the state word is detected.
        #[test]
        fn any_bit_flip_is_detected(byte in 0usize..HEADER_LEN, bit in 0u8..8) {
            prop_assume!(!(STATE_OFFSET..STATE_OFFSET + 4).contains(&byte));
            let h = sample();
            let mut b = h.encode();
            b[byte] ^= 1 << bit;
            let decoded = Header::decode(&b);
            prop_assert!(decoded.is_err(), "flip at {}:{} accepted: {:?}", byte, bit, decoded);
        }

        // Any header that decodes and validates fits in the space it claims.
        #[test]
        fn validated_lengths_fit(total in any::<u64>(), avail in any::<u64>()) {
            let h = Header::new(ObjectKind::Array, TypeFingerprint::of::<u32>(), total, 3);
            let b = h.encode();
            let d = Header::decode(&b).unwrap();
            if d.validate(ObjectKind::Array, TypeFingerprint::of::<u32>(), avail).is_ok() {
                prop_assert!(d.total_len <= avail && d.total_len >= HEADER_LEN as u64);
            }
        }
    }
}
