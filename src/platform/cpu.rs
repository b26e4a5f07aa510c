//! CPU hints: instructions that change no program state, only where a cache
//! line is.

/// Asks the CPU to fetch the cache line holding `p` for writing (x86's
/// `PREFETCHW`), so that a store to it soon after does not wait for the line
/// to come from another core. A hint: it never faults, changes no memory and
/// is not ordered with fences or locked instructions, which is the point —
/// the request overlaps the work in between instead of serialising behind
/// the next locked instruction. A no-op where the CPU lacks the instruction
/// (CPUID `PRFCHW`, checked once), on other architectures and under Miri.
#[inline]
pub(crate) fn prefetch_for_write(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if has_prefetchw() {
        // SAFETY: PREFETCHW reads no memory and writes none (a hint; it does
        // not fault even on an unmapped address), touches no register but
        // its operand, and the CPU supports it (checked above).
        unsafe {
            std::arch::asm!(
                "prefetchw [{0}]",
                in(reg) p,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Whether this CPU has `PREFETCHW` (CPUID leaf 0x8000_0001, ECX bit 8),
/// asked once per process.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline]
fn has_prefetchw() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not asked yet, 1: no, 2: yes. Relaxed: every thread computes the
    // same answer, the value is all that is shared.
    static HAS: AtomicU8 = AtomicU8::new(0);
    match HAS.load(Ordering::Relaxed) {
        0 => {
            // CPUID exists on every x86_64 CPU (a safe intrinsic there).
            let max = std::arch::x86_64::__cpuid(0x8000_0000).eax;
            let has =
                max >= 0x8000_0001 && std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0;
            HAS.store(1 + u8::from(has), Ordering::Relaxed);
            has
        }
        v => v == 2,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefetch_changes_nothing() {
        let mut line = [7u8; 128];
        super::prefetch_for_write(line.as_ptr());
        // Not a valid address: a prefetch of it still does not fault.
        super::prefetch_for_write(8 as *const u8);
        line[0] += 1;
        assert_eq!(line[..2], [8, 7]);
    }
}
