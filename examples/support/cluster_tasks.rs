//! The functions the cluster example's submitter and worker agree on: both
//! programs build the same registry from this file.

// `#[inline(never)]`: one address per function, so that `pool.submit(is_prime, n)`
// finds it in the registry in an optimised build too (see ipckit::cluster's
// docs, "Functions travel by name").

/// Whether `n` is prime (trial division: a few microseconds of CPU each).
#[inline(never)]
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// A slow task: sleeps `ms` milliseconds and says where it ran.
#[inline(never)]
pub fn nap(ms: u64) -> String {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    format!(
        "slept {ms} ms in process {} on {} (delivery {})",
        std::process::id(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        ipckit::cluster::current_attempt()
    )
}

pub fn registry() -> ipckit::cluster::Registry {
    ipckit::registry![is_prime, nap]
}
