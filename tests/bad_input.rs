//! Bad input is a clear error with a matching kind — never a panic or UB.

mod common;

use std::time::{Duration, Instant};

use common::Ctx;
use ipckit::layout::TypeFingerprint;
use ipckit::layout::header::{
    HEADER_LEN, Header, ObjectKind, STATE_INIT, STATE_OFFSET, STATE_READY,
};
use ipckit::sync::{Barrier, Condvar, Event, Mutex, Semaphore};
use ipckit::{Array, ErrorKind, Segment, Value};
use proptest::prelude::*;

/// Opens `name` as every object type; returns each result's error kind
/// (`None` for success).
fn open_all(name: &str) -> Vec<(&'static str, Option<ErrorKind>)> {
    fn k<T>(r: ipckit::Result<T>) -> Option<ErrorKind> {
        r.err().map(|e| {
            // Every message names what was being opened.
            let text = e.to_string();
            assert!(
                text.starts_with("cannot") || text.starts_with("invalid"),
                "{text}"
            );
            e.kind()
        })
    }
    vec![
        ("Mutex<u64>", k(Mutex::<u64>::open(name))),
        ("Condvar", k(Condvar::open(name))),
        ("Semaphore", k(Semaphore::open(name))),
        ("Event", k(Event::open(name))),
        ("Barrier", k(Barrier::open(name))),
        ("Value<u64>", k(Value::<u64>::open(name))),
        ("Array<u32>", k(Array::<u32>::open(name))),
    ]
}

#[test]
fn missing_names_are_not_found() {
    let t = Ctx::new("missing");
    let name = t.name("nothing-here");
    for (what, kind) in open_all(&name) {
        assert_eq!(kind, Some(ErrorKind::NotFound), "{what}");
    }
    assert_eq!(
        Segment::open(&name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn invalid_names_are_rejected() {
    let long = "x".repeat(300);
    for name in ["", "/", "a/b", "..", long.as_str()] {
        for (what, kind) in open_all(name) {
            assert_eq!(kind, Some(ErrorKind::InvalidName), "{what} {name:?}");
        }
        assert_eq!(
            Value::create(name, 1u8).unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        assert_eq!(
            Segment::create(name, 1).unwrap_err().kind(),
            ErrorKind::InvalidName
        );
    }
}

#[test]
fn another_kind_of_object_is_wrong_kind() {
    let t = Ctx::new("wrong_kind");
    let name = t.name("m");
    let _m = Mutex::create(&name, 0u64).unwrap();
    for (what, kind) in open_all(&name) {
        let expected = if what == "Mutex<u64>" {
            None
        } else {
            Some(ErrorKind::WrongKind)
        };
        assert_eq!(kind, expected, "{what}");
    }
    let e = Semaphore::open(&name).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot open semaphore {name:?}: segment holds a Mutex, not a Semaphore")
    );
}

#[test]
fn another_element_type_is_wrong_type() {
    let t = Ctx::new("wrong_type");
    let v = t.name("v");
    let _v = Value::create(&v, 0u64).unwrap();
    for e in [
        Value::<i64>::open(&v).map(drop).unwrap_err(),
        Value::<u32>::open(&v).map(drop).unwrap_err(),
        Value::<[u8; 8]>::open(&v).map(drop).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::WrongType, "{e}");
    }
    let e = Value::<i64>::open(&v).unwrap_err();
    assert!(
        e.to_string()
            .contains("element type is `u64` (8 bytes), not `i64`"),
        "{e}"
    );
    let a = t.name("a");
    let _a = Array::create(&a, &[1.0f32, 2.0]).unwrap();
    assert_eq!(
        Array::<u32>::open(&a).unwrap_err().kind(),
        ErrorKind::WrongType
    );
    assert_eq!(
        Array::<f32>::open(&a).unwrap().to_vec().unwrap(),
        [1.0, 2.0]
    );
}

fn write_header(seg: &Segment, offset: usize, h: &Header, state: u32) {
    let bytes = h.encode();
    seg.write_at(offset, &bytes).unwrap();
    seg.write_at(offset + STATE_OFFSET, &state.to_le_bytes())
        .unwrap();
}

fn value_header(total_len: u64) -> Header {
    Header::new(
        ObjectKind::Value,
        TypeFingerprint::of::<u64>(),
        total_len,
        0,
    )
}

#[test]
fn truncated_segments_are_corrupt() {
    let t = Ctx::new("truncated");
    // Smaller than a header.
    let tiny = t.name("tiny");
    let _s = Segment::create(&tiny, 64).unwrap();
    for (what, kind) in open_all(&tiny) {
        assert_eq!(kind, Some(ErrorKind::Corrupt), "{what}");
    }
    // A valid header claiming more bytes than the segment has.
    let short = t.name("short");
    let seg = Segment::create(&short, 200).unwrap();
    let real = Value::<u64>::size_in_segment() as u64;
    assert!(real > 200);
    write_header(&seg, 0, &value_header(real), STATE_READY);
    let e = Value::<u64>::open(&short).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn lengths_that_disagree_with_parameters_are_corrupt() {
    let t = Ctx::new("lying_lengths");
    // An Array whose element count does not match its length.
    let name = t.name("array");
    let seg = Segment::create(&name, 4096).unwrap();
    let h = Header::new(
        ObjectKind::Array,
        TypeFingerprint::of::<u32>(),
        4096,
        1 << 40,
    );
    write_header(&seg, 0, &h, STATE_READY);
    assert_eq!(
        Array::<u32>::open(&name).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    // A Semaphore claiming far more holder slots than fit.
    let name = t.name("sem");
    let seg = Segment::create(&name, 4096).unwrap();
    let h = Header::new(
        ObjectKind::Semaphore,
        TypeFingerprint::NONE,
        4096,
        u32::MAX as u64,
    );
    write_header(&seg, 0, &h, STATE_READY);
    assert_eq!(
        Semaphore::open(&name).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    // A Value whose header is too short for the lock and data.
    let name = t.name("value");
    let seg = Segment::create(&name, 4096).unwrap();
    write_header(&seg, 0, &value_header(HEADER_LEN as u64), STATE_READY);
    assert_eq!(
        Value::<u64>::open(&name).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn garbage_and_foreign_headers_are_corrupt() {
    let t = Ctx::new("garbage");
    let name = t.name("g");
    let seg = Segment::create(&name, 4096).unwrap();
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    seg.write_at(0, &junk).unwrap();
    for (what, kind) in open_all(&name) {
        assert_eq!(kind, Some(ErrorKind::Corrupt), "{what}");
    }
    // The right magic with a broken checksum.
    let mut bytes = value_header(4096).encode();
    bytes[80] ^= 0xff;
    seg.write_at(0, &bytes).unwrap();
    seg.write_at(STATE_OFFSET, &STATE_READY.to_le_bytes())
        .unwrap();
    let e = Value::<u64>::open(&name).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("checksum"), "{e}");
    // A newer layout version.
    let mut bytes = value_header(4096).encode();
    bytes[12] = 99;
    seg.write_at(0, &bytes).unwrap();
    seg.write_at(STATE_OFFSET, &STATE_READY.to_le_bytes())
        .unwrap();
    assert_eq!(
        Value::<u64>::open(&name).unwrap_err().kind(),
        ErrorKind::Incompatible
    );
    // An invalid state word.
    write_header(&seg, 0, &value_header(4096), 0xdead_beef);
    assert_eq!(
        Value::<u64>::open(&name).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn objects_never_published_are_uninitialised_after_a_bounded_wait() {
    let t = Ctx::new("uninit");
    let zero = t.name("zero");
    let _z = Segment::create(&zero, 4096).unwrap();
    let half = t.name("half");
    let seg = Segment::create(&half, 4096).unwrap();
    write_header(
        &seg,
        0,
        &value_header(Value::<u64>::size_in_segment() as u64),
        STATE_INIT,
    );
    for name in [&zero, &half] {
        let start = Instant::now();
        let e = Value::<u64>::open(name).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Uninitialized, "{e}");
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn embedded_objects_check_offsets() {
    let _t = Ctx::new("offsets");
    let seg = Segment::new(4096).unwrap();
    assert_eq!(
        Event::create_in(&seg, 8).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        Event::create_in(&seg, 4096).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        Mutex::create_in(&seg, 4096 - 64, 0u64).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    // Several objects side by side in one segment.
    let e = Event::create_in(&seg, 0).unwrap();
    let off = Event::size_in_segment().next_multiple_of(64);
    let m = Mutex::create_in(&seg, off, 5u32).unwrap();
    let off2 = off + Mutex::<u32>::size_in_segment().next_multiple_of(64);
    let v = Value::create_in(&seg, off2, 1.5f64).unwrap();
    e.set();
    assert!(Event::open_in(&seg, 0).unwrap().is_set());
    assert_eq!(
        *Mutex::<u32>::open_in(&seg, off).unwrap().lock().unwrap(),
        5
    );
    assert_eq!(
        Value::<f64>::open_in(&seg, off2).unwrap().get().unwrap(),
        1.5
    );
    assert_eq!(
        Value::<f64>::open_in(&seg, off).unwrap_err().kind(),
        ErrorKind::WrongKind
    );
    drop((m, v));
}

#[test]
fn a_stale_anonymous_handle_is_an_error() {
    let v = Value::new(1u32).unwrap();
    let bytes = postcard::to_allocvec(&v).unwrap();
    let ok: Value<u32> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(ok.get().unwrap(), 1);
    drop((v, ok));
    let r: Result<Value<u32>, _> = postcard::from_bytes(&bytes);
    let e = r.unwrap_err();
    let text = e.to_string();
    assert!(!text.is_empty());
    // Truncated token bytes are a decode error as well.
    let r: Result<Value<u32>, _> = postcard::from_bytes(&bytes[..bytes.len() / 2]);
    assert!(r.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// Any bytes in a segment, opened as any object type: an error or a
    /// valid object, never a panic. Half the cases carry a valid magic,
    /// version and READY state so the deeper checks run.
    #[test]
    fn arbitrary_segment_contents_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 1..1024),
        plausible in any::<bool>(),
        which in 0usize..7,
    ) {
        let t = Ctx::new("prop_garbage");
        let name = t.name("p");
        let seg = Segment::create(&name, bytes.len()).unwrap();
        let mut bytes = bytes;
        if plausible && bytes.len() >= HEADER_LEN {
            bytes[..8].copy_from_slice(b"ipckit\0\x01");
            bytes[STATE_OFFSET..STATE_OFFSET + 4].copy_from_slice(&STATE_READY.to_le_bytes());
            bytes[12..14].copy_from_slice(&1u16.to_le_bytes());
            bytes[14..16].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        }
        if bytes.len() >= 12 && bytes[STATE_OFFSET..STATE_OFFSET + 4] == STATE_INIT.to_le_bytes() {
            bytes[STATE_OFFSET] ^= 1; // avoid the bounded wait for a creator
        }
        if bytes[..8.min(bytes.len())].iter().all(|&b| b == 0) {
            bytes[0] = 1; // likewise for an all-zero "fresh" header
        }
        seg.write_at(0, &bytes).unwrap();
        let (what, kind) = open_all(&name)[which];
        prop_assert!(kind.is_some(), "{} accepted garbage", what);
    }

    /// A handle is decoded from bytes another process sent: arbitrary bytes
    /// are an error (or, by freak chance, a valid handle), never a panic.
    #[test]
    fn arbitrary_handle_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = postcard::from_bytes::<Segment>(&bytes);
        let _ = postcard::from_bytes::<Value<u32>>(&bytes);
        let _ = postcard::from_bytes::<Semaphore>(&bytes);
        let _ = postcard::from_bytes::<Array<u8>>(&bytes);
    }

    /// A real anonymous-handle token with one field corrupted is an error,
    /// never a mapping of the wrong memory.
    #[test]
    fn corrupted_anonymous_tokens_are_rejected(at in 0usize..32, xor in 1u8..=255) {
        let v = Value::new(7u32).unwrap();
        let mut bytes = postcard::to_allocvec(&v).unwrap();
        prop_assume!(at < bytes.len());
        bytes[at] ^= xor;
        if let Ok(w) = postcard::from_bytes::<Value<u32>>(&bytes) {
            // Only harmless corruptions decode (e.g. of the offset's unused
            // high bits are impossible in postcard's varints): it must be `v`.
            prop_assert_eq!(w.get().unwrap(), 7);
            w.set(8).unwrap();
            prop_assert_eq!(v.get().unwrap(), 8);
        }
    }
}
