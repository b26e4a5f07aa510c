//! Bytes inside a segment: what may live there and how objects are described.
//!
//! This layer makes no system calls, so Miri can run all of it.
//!
//! - [`ShmSafe`]: the marker for types that may be placed in shared memory.
//! - [`header`]: the object header every ipckit object starts with, its byte
//!   format and its validation.

pub mod header;

/// Types that may be placed directly in shared memory.
///
/// A value of such a type is read and written by several processes, possibly
/// of different builds of the same program, and a process may die half-way
/// through writing one.
///
/// # Safety
///
/// Implement this only for types that are:
///
/// - `#[repr(C)]` or `#[repr(transparent)]` (or a primitive), so the layout is
///   the same in every process;
/// - free of pointers, references, heap allocations and file descriptors
///   (addresses differ between processes);
/// - valid for **every** bit pattern — a torn write by a process killed
///   mid-store, or garbage from a hostile peer, must not be undefined
///   behaviour to read. So `bool`, `char`, enums and `NonZero*` are not
///   `ShmSafe`; store them as integers;
/// - `Copy` and without `Drop`.
///
/// ```
/// #[derive(Clone, Copy, Debug, Default)]
/// #[repr(C)]
/// struct Point { x: f64, y: f64 }
/// // SAFETY: repr(C), two f64s: no pointers, every bit pattern is valid.
/// unsafe impl ipckit::ShmSafe for Point {}
/// ```
pub unsafe trait ShmSafe: Copy + Send + Sync + 'static {}

macro_rules! shm_safe {
    ($($t:ty),* $(,)?) => { $(
        // SAFETY: primitive integer/float types: no pointers, every bit pattern valid.
        unsafe impl ShmSafe for $t {}
    )* };
}
shm_safe!(
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    ()
);

// SAFETY: an array of ShmSafe elements has no padding between elements and
// inherits every property of its element type.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

/// The size of a cache line on the platforms ipckit supports, used to keep
/// words that different processes write on separate lines.
pub const CACHE_LINE: usize = 64;

/// A value alone on its pair of cache lines, so that words written by
/// different processes (a queue's head and tail) do not share a line.
///
/// 128 bytes, not 64: on x86_64 the adjacent-line prefetcher fetches lines
/// in pairs, which makes 128 bytes the unit of false sharing (as
/// crossbeam's `CachePadded` notes). `Deref` gives the value, so code reads
/// `ring.tail.load(..)`. `#[repr(C)]` with the value first: its offset is 0
/// in every build.
#[repr(C, align(128))]
pub(crate) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Padded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Rounds `n` up to a multiple of `align` (a power of two). `None` on overflow.
pub const fn align_up(n: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    match n.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// What identifies an element type across processes: its name (as
/// `std::any::type_name` spells it), size and alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeFingerprint {
    /// The type's name; also stored (truncated) for error messages.
    pub name: &'static str,
    /// `size_of::<T>()`.
    pub size: u64,
    /// `align_of::<T>()`.
    pub align: u32,
}

impl TypeFingerprint {
    /// The fingerprint of `T`.
    pub fn of<T>() -> TypeFingerprint {
        TypeFingerprint {
            name: std::any::type_name::<T>(),
            size: std::mem::size_of::<T>() as u64,
            align: std::mem::align_of::<T>() as u32,
        }
    }

    /// The fingerprint of "no element type" (for objects such as `Event`).
    pub const NONE: TypeFingerprint = TypeFingerprint {
        name: "",
        size: 0,
        align: 0,
    };

    /// A 64-bit hash of the name (FNV-1a), stored in headers.
    pub fn name_hash(&self) -> u64 {
        fnv1a(self.name.as_bytes())
    }
}

/// 64-bit FNV-1a: small, dependency-free, good enough to tell type names and
/// header contents apart (it is not a defence against a deliberate forger,
/// who could write any object anyway).
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(0xcbf2_9ce4_8422_2325, bytes)
}

/// Continues an FNV-1a hash over more bytes.
pub const fn fnv1a_continue(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_is_two_lines_and_derefs() {
        assert_eq!(std::mem::size_of::<Padded<u32>>(), 128);
        assert_eq!(std::mem::align_of::<Padded<u8>>(), 128);
        let mut p = Padded(5u32);
        *p += 1;
        assert_eq!(*p, 6);
    }

    #[test]
    fn align_up_rounds() {
        assert_eq!(align_up(0, 64), Some(0));
        assert_eq!(align_up(1, 64), Some(64));
        assert_eq!(align_up(64, 64), Some(64));
        assert_eq!(align_up(129, 8), Some(136));
        assert_eq!(align_up(usize::MAX, 8), None);
    }

    #[test]
    fn fingerprints_differ() {
        let a = TypeFingerprint::of::<u64>();
        let b = TypeFingerprint::of::<i64>();
        assert_eq!(a.size, b.size);
        assert_ne!(a.name_hash(), b.name_hash());
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
