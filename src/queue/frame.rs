//! The pure parts of the queue: ring position words and frame headers.
//! No system calls and no shared memory here, so Miri runs all of it.
//!
//! # Position words
//!
//! Each side of the ring has one 64-bit word, committed by a single store:
//!
//! | bits | meaning |
//! |---|---|
//! | 0..36 | position in 8-byte units, modulo 2^36 (a byte position modulo 2^39) |
//! | 36..64 | messages completed through this side, modulo 2^28 |
//!
//! Packing the position and the message count into one word is what makes a
//! put or get crash-atomic: a process killed before the store leaves the old
//! word (its frame is invisible, or still there), after it the new one. The
//! ring capacity is at most 2^38 bytes, so positions that differ by at most
//! the capacity compare correctly modulo 2^36 units; at most 2^28 - 1
//! messages may be queued at once ([`MAX_ITEMS`]).
//!
//! # Frames
//!
//! A frame is an 8-byte header (`u32` payload length, `u32` kind) followed by
//! the payload, padded to a multiple of 8 bytes. Headers are 8-byte aligned
//! and the capacity is a power of two, so a header never wraps around the end
//! of the ring; a payload may (it is copied in two parts).
//!
//! A message is one `Whole` frame, or, when larger than half the ring, a
//! stream: `Start` (payload: the total length as a `u64`), `Cont` frames, and
//! a final `End` frame — or an `Abort` frame if the producer gave up or died.
//!
//! A `Skip` frame fills the ring from its position to the ring's end, and
//! consumers step over it: a producer writes one, committed with the frame
//! after it (at the ring's start) by a single `tail` store, to go back to
//! the ring's start early ([`early_wrap`]).

use std::fmt;

/// Bytes per position unit; frames are aligned to it.
pub(crate) const UNIT: usize = 8;
/// Bytes of a frame header.
pub(crate) const FRAME_HEADER: usize = 8;
const POS_BITS: u32 = 36;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const COUNT_MASK: u64 = (1 << (64 - POS_BITS)) - 1;
/// The most messages a queue can hold at once.
pub const MAX_ITEMS: u64 = COUNT_MASK;
/// Smallest ring capacity in bytes.
pub const MIN_CAPACITY: usize = 4096;
/// Largest ring capacity in bytes.
pub const MAX_CAPACITY: u64 = 1 << 38;

/// Packs a position (in units) and a message count into one word.
pub(crate) const fn pack(pos_units: u64, count: u64) -> u64 {
    (pos_units & POS_MASK) | ((count & COUNT_MASK) << POS_BITS)
}

/// Splits a word into (position in units, message count).
pub(crate) const fn unpack(word: u64) -> (u64, u64) {
    (word & POS_MASK, word >> POS_BITS)
}

/// Units between a head and a tail position.
pub(crate) const fn used_units(head: u64, tail: u64) -> u64 {
    tail.wrapping_sub(head) & POS_MASK
}

/// Messages between two counts (`later - earlier`, modulo 2^28).
pub(crate) const fn count_between(earlier: u64, later: u64) -> u64 {
    later.wrapping_sub(earlier) & COUNT_MASK
}

/// Units a frame with `payload` bytes occupies (`None` if absurdly large).
pub(crate) const fn frame_units(payload: usize) -> Option<u64> {
    match payload.checked_add(FRAME_HEADER + UNIT - 1) {
        Some(n) => Some((n / UNIT) as u64),
        None => None,
    }
}

/// Byte offset in the ring of a position, for a power-of-two capacity.
pub(crate) const fn ring_offset(pos_units: u64, capacity: usize) -> usize {
    ((pos_units as usize).wrapping_mul(UNIT)) & (capacity - 1)
}

/// The capacity actually used for a request: a power of two, at least
/// [`MIN_CAPACITY`]. `None` beyond [`MAX_CAPACITY`].
pub(crate) fn round_capacity(requested: usize) -> Option<usize> {
    let cap = requested.max(MIN_CAPACITY).checked_next_power_of_two()?;
    (cap as u64 <= MAX_CAPACITY).then_some(cap)
}

/// Whether `cap` is a capacity a queue can have.
pub(crate) fn valid_capacity(cap: u64) -> bool {
    cap.is_power_of_two() && cap >= MIN_CAPACITY as u64 && cap <= MAX_CAPACITY
}

/// The largest payload of any frame: a header stores the length in 32
/// bits, so rings of 16 GiB and more (whose half would exceed it) send
/// longer messages as streams of frames of at most this.
pub(crate) const MAX_FRAME_PAYLOAD: usize = 1 << 31;

/// The largest message sent as a single frame: its frame fits in half the
/// ring (and its length in a header).
pub(crate) const fn max_whole_payload(capacity: usize) -> usize {
    let half = capacity / 2 - FRAME_HEADER;
    if half < MAX_FRAME_PAYLOAD {
        half
    } else {
        MAX_FRAME_PAYLOAD
    }
}

/// Payload bytes per `Cont`/`End` frame of a stream: a quarter of the ring
/// (at most half of [`MAX_FRAME_PAYLOAD`]).
pub(crate) const fn chunk_payload(capacity: usize) -> usize {
    let quarter = capacity / 4 - FRAME_HEADER;
    if quarter < MAX_FRAME_PAYLOAD / 2 {
        quarter
    } else {
        MAX_FRAME_PAYLOAD / 2
    }
}

/// Frame kinds; the codes carry a tag so stray bytes are rarely mistaken for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Whole,
    Start,
    Cont,
    End,
    Abort,
    Skip,
}

const KIND_TAG: u32 = 0x4652_0000; // "FR"

impl FrameKind {
    const fn code(self) -> u32 {
        KIND_TAG
            | match self {
                FrameKind::Whole => 1,
                FrameKind::Start => 2,
                FrameKind::Cont => 3,
                FrameKind::End => 4,
                FrameKind::Abort => 5,
                FrameKind::Skip => 6,
            }
    }

    fn from_code(code: u32) -> Option<FrameKind> {
        match code {
            c if c == FrameKind::Whole.code() => Some(FrameKind::Whole),
            c if c == FrameKind::Start.code() => Some(FrameKind::Start),
            c if c == FrameKind::Cont.code() => Some(FrameKind::Cont),
            c if c == FrameKind::End.code() => Some(FrameKind::End),
            c if c == FrameKind::Abort.code() => Some(FrameKind::Abort),
            c if c == FrameKind::Skip.code() => Some(FrameKind::Skip),
            _ => None,
        }
    }
}

/// Where a producer goes back to the ring's start early: with its tail at
/// `tail_pos` and the head at `head_pos` (units; the head may be stale, as
/// it only moves forward), a frame of `frame_units` that would be written
/// at or past `after_units` into a ring of `cap_units` goes to the ring's
/// start instead if at most half of `after_units` is queued (the
/// consumer keeps up) and everything queued and the frame then fit: the
/// rest of the ring becomes a `Skip` frame of the returned units, committed
/// with the frame. `None`: the frame stays where it is.
///
/// The skip holds its space until the consumer passes it, which it does
/// right after the little queued before it; so a ring with a skip in it
/// still has room for at least `after_units` less that half and a frame.
/// A producer that finds the ring full with the skip at the head and no
/// consumer at work steps over it itself (`ProducerGuard::reclaim_skip`,
/// also between the slices of its sleep), so a burst gets the whole ring.
///
/// Why: every frame goes to the ring's next bytes, so a ring sized for
/// bursts cycles all of itself through the caches even while its consumer
/// keeps up and a few frames are queued at a time. Going back to the start
/// keeps it to `after_units` and a frame while the consumer keeps up, and
/// uses the rest only for a backlog (`docs/design-measurements.md`, "The
/// 1 MiB one-way and the ring's size").
pub(crate) fn early_wrap(
    head_pos: u64,
    tail_pos: u64,
    cap_units: u64,
    frame_units: u64,
    after_units: u64,
) -> Option<u64> {
    let off = tail_pos & (cap_units - 1);
    if off < after_units || off == 0 {
        return None;
    }
    let used = used_units(head_pos, tail_pos);
    if used > after_units / 2 {
        return None;
    }
    let skip = cap_units - off;
    // The skip's payload length must fit a header's 32 bits.
    if (skip - 1) * UNIT as u64 > MAX_FRAME_PAYLOAD as u64 {
        return None;
    }
    // Saturating: positions come from shared memory; a forged head reads as
    // a full ring, never as room.
    let free = cap_units.saturating_sub(used);
    (used <= cap_units && skip.checked_add(frame_units)? <= free).then_some(skip)
}

/// A frame header's bytes.
pub(crate) fn encode_header(kind: FrameKind, len: u32) -> [u8; FRAME_HEADER] {
    let mut b = [0u8; FRAME_HEADER];
    b[..4].copy_from_slice(&len.to_le_bytes());
    b[4..].copy_from_slice(&kind.code().to_le_bytes());
    b
}

/// Why a frame was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The kind field is not a frame kind.
    BadKind(u32),
    /// The frame claims more bytes than the ring holds.
    Overrun { frame_units: u64, used_units: u64 },
    /// A `Start` frame whose payload is not a length.
    BadStart(u32),
    /// The positions claim more queued than the ring holds (a forged or
    /// corrupt head or tail).
    Positions { used_units: u64, cap_units: u64 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadKind(k) => write!(f, "corrupt frame: unknown kind {k:#010x}"),
            FrameError::Overrun {
                frame_units,
                used_units,
            } => write!(
                f,
                "corrupt frame: it claims {} bytes but only {} are queued",
                frame_units * UNIT as u64,
                used_units * UNIT as u64
            ),
            FrameError::BadStart(len) => {
                write!(f, "corrupt frame: a stream start of {len} bytes, not 8")
            }
            FrameError::Positions {
                used_units,
                cap_units,
            } => write!(
                f,
                "corrupt queue: head and tail say {} bytes are queued in a ring of {}",
                used_units * UNIT as u64,
                cap_units * UNIT as u64
            ),
        }
    }
}

/// Decodes and checks a frame header against the `used_units` queued in a
/// ring of `cap_units` (positions come from shared memory: more queued
/// than the ring holds is corruption, and a frame never exceeds what is
/// queued, so whatever is copied out lies inside the ring). Returns the
/// kind, the payload length and the frame's size in units.
pub(crate) fn decode_header(
    b: [u8; FRAME_HEADER],
    used_units: u64,
    cap_units: u64,
) -> Result<(FrameKind, u32, u64), FrameError> {
    if used_units > cap_units {
        return Err(FrameError::Positions {
            used_units,
            cap_units,
        });
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let code = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let kind = FrameKind::from_code(code).ok_or(FrameError::BadKind(code))?;
    let units = frame_units(len as usize).unwrap_or(u64::MAX);
    if units > used_units {
        return Err(FrameError::Overrun {
            frame_units: units,
            used_units,
        });
    }
    if kind == FrameKind::Start && len != 8 {
        return Err(FrameError::BadStart(len));
    }
    Ok((kind, len, units))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_pack_and_wrap() {
        assert_eq!(unpack(pack(5, 7)), (5, 7));
        assert_eq!(unpack(pack(POS_MASK + 3, COUNT_MASK + 2)), (2, 1));
        assert_eq!(used_units(POS_MASK, 1), 2, "the tail wrapped past the head");
        assert_eq!(count_between(COUNT_MASK, 0), 1);
        assert_eq!(frame_units(0), Some(1));
        assert_eq!(frame_units(1), Some(2));
        assert_eq!(frame_units(8), Some(2));
        assert_eq!(frame_units(9), Some(3));
        assert_eq!(frame_units(usize::MAX), None);
        assert_eq!(ring_offset(3, 4096), 24);
        assert_eq!(ring_offset(512, 4096), 0);
    }

    #[test]
    fn capacities_round_to_powers_of_two() {
        assert_eq!(round_capacity(0), Some(MIN_CAPACITY));
        assert_eq!(round_capacity(5000), Some(8192));
        assert_eq!(round_capacity(1 << 20), Some(1 << 20));
        assert_eq!(round_capacity(usize::MAX), None);
        assert!(valid_capacity(4096));
        assert!(!valid_capacity(4095));
        assert!(!valid_capacity(2048));
        assert!(!valid_capacity(1 << 39));
        assert_eq!(max_whole_payload(4096), 2040);
        assert_eq!(chunk_payload(4096), 1016);
        // Half a big ring would not fit a header's 32-bit length (a 4 GiB
        // message in a 16 GiB ring came out as its length modulo 2^32).
        assert_eq!(max_whole_payload(1 << 32), (1 << 31) - FRAME_HEADER);
        assert_eq!(max_whole_payload(1 << 33), MAX_FRAME_PAYLOAD);
        assert_eq!(max_whole_payload(1 << 34), MAX_FRAME_PAYLOAD);
        assert_eq!(chunk_payload(1 << 35), MAX_FRAME_PAYLOAD / 2);
        assert_eq!(max_whole_payload(MAX_CAPACITY as usize), MAX_FRAME_PAYLOAD);
        for cap_log in 12..=38 {
            let cap = 1usize << cap_log;
            assert!(max_whole_payload(cap) <= u32::MAX as usize);
            assert!(chunk_payload(cap) <= max_whole_payload(cap));
        }
    }

    #[test]
    fn headers_round_trip_and_are_checked() {
        for kind in [
            FrameKind::Whole,
            FrameKind::Cont,
            FrameKind::End,
            FrameKind::Abort,
            FrameKind::Skip,
        ] {
            let h = encode_header(kind, 100);
            assert_eq!(decode_header(h, 14, 512), Ok((kind, 100, 14)));
            assert!(matches!(
                decode_header(h, 13, 512),
                Err(FrameError::Overrun { .. })
            ));
        }
        assert_eq!(
            decode_header(encode_header(FrameKind::Start, 8), 2, 512),
            Ok((FrameKind::Start, 8, 2))
        );
        assert_eq!(
            decode_header(encode_header(FrameKind::Start, 9), 10, 512),
            Err(FrameError::BadStart(9))
        );
        assert!(matches!(
            decode_header([0; 8], 100, 512),
            Err(FrameError::BadKind(0))
        ));
        let e = decode_header(encode_header(FrameKind::Whole, u32::MAX), 10, 512).unwrap_err();
        assert!(e.to_string().contains("only 80 are queued"), "{e}");
        // A forged tail: 1 MB "queued" in a 4 KiB ring, with a header to match.
        let e =
            decode_header(encode_header(FrameKind::Whole, 1_000_000), 125_002, 512).unwrap_err();
        assert_eq!(
            e,
            FrameError::Positions {
                used_units: 125_002,
                cap_units: 512
            }
        );
        assert!(e.to_string().contains("in a ring of 4096"), "{e}");
    }

    #[test]
    fn a_producer_wraps_early_only_into_free_space() {
        // A 4096-unit ring, wrapping after 1024 units.
        let w = |head, tail, frame| early_wrap(head, tail, 4096, frame, 1024);
        // Consumer caught up at 2000: the rest of the ring (2096) is skipped.
        assert_eq!(w(2000, 2000, 100), Some(2096));
        // Up to half the bound queued; not more.
        assert_eq!(w(1488, 2000, 100), Some(2096));
        assert_eq!(w(1487, 2000, 100), None);
        // Not yet past the bound, or already at the ring's start.
        assert_eq!(w(1000, 1000, 100), None);
        assert_eq!(w(4096, 4096, 100), None);
        // A frame at the start that would reach what is still queued...
        assert_eq!(w(1900, 2000, 1901), None);
        // ...and one that ends before it.
        assert_eq!(w(1900, 2000, 1900), Some(2096));
        // A queue that already wrapped (head past the tail's offset).
        assert_eq!(w(3000, 4096 + 1500, 100), None);
        // Forged positions: more queued than the ring holds.
        assert_eq!(w(0, 8192 + 2000, 1), None);
        // Rings whose skip would not fit a header's length: never.
        let big = 1u64 << 35;
        assert_eq!(early_wrap(big - 8, big - 8 + (1 << 28), big, 1, 1), None);
    }

    proptest! {
        #[test]
        fn an_early_wrap_keeps_everything_queued_intact(
            cap_log in 9u32..30,
            head in any::<u64>(),
            used_frac in 0.0f64..1.0,
            frame in 1u64..4096,
            after_frac in 0.0f64..1.0,
        ) {
            let cap = 1u64 << cap_log;
            let head = head & POS_MASK;
            let tail = (head + (used_frac * cap as f64) as u64) & POS_MASK;
            let after = (after_frac * cap as f64) as u64;
            if let Some(skip) = early_wrap(head, tail, cap, frame, after) {
                let used = used_units(head, tail);
                // The skip ends at the ring's end, the frame starts there,
                // and the new tail is still within a ring of the head.
                prop_assert_eq!((tail + skip) & (cap - 1), 0);
                prop_assert!(used + skip + frame <= cap);
                prop_assert!((tail & (cap - 1)) >= after);
                prop_assert!(used <= after / 2);
                prop_assert_eq!(frame_units(((skip - 1) * UNIT as u64) as usize), Some(skip));
            }
        }

        #[test]
        fn any_header_bytes_decode_safely(
            b in any::<[u8; 8]>(),
            used in any::<u64>(),
            cap_log in 9u32..36,
        ) {
            let cap = 1u64 << cap_log;
            if let Ok((_, len, units)) = decode_header(b, used, cap) {
                prop_assert!(units <= used && used <= cap);
                prop_assert_eq!(frame_units(len as usize), Some(units));
            }
        }

        #[test]
        fn positions_compare_modulo(head in any::<u64>(), delta in 0u64..(1 << 35)) {
            let tail = (head + delta) & POS_MASK;
            prop_assert_eq!(used_units(head & POS_MASK, tail), delta);
        }
    }
}
