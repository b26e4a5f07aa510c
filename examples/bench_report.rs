//! Turns the saved results of `cargo bench --bench transports` into a
//! Markdown report (`docs/benchmarks.md`, also printed) and a chart
//! (`docs/throughput.svg`).
//!
//! ```text
//! cargo bench --bench transports                 # measure (a few minutes)
//! cargo run --release --example bench_report     # report
//! ```
//!
//! It reads criterion's estimates (`target/criterion/transports_*/*/new/
//! estimates.json`: the mean time per message or per round trip), the
//! latency percentiles, the regime runs (ring size × machine load,
//! `regimes.json`) and the Python peers' results the bench leaves in
//! `target/ipckit-bench/`. Rows missing from the results are skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

// The bench prints the same tables at the end of its regime section.
#[path = "../benches/common/regime_report.rs"]
mod regime_report;

const SIZES: [(&str, f64); 4] = [
    ("64B", 64.0),
    ("4KiB", 4096.0),
    ("64KiB", 65536.0),
    ("1MiB", 1048576.0),
];

/// Rows in display order: (bench id, label).
const TRANSPORTS: [(&str, &str); 13] = [
    ("ipckit_queue", "ipckit `Queue` (bytes)"),
    ("ipckit_queue_typed", "ipckit `Queue<Vec<u8>>` (typed)"),
    ("ipckit_connection", "ipckit `Connection` (unix socket)"),
    (
        "ipckit_segment_event",
        "ipckit `Segment` + `Event` hand-off",
    ),
    ("pipe", "pipe(2)"),
    ("unix_socketpair", "unix socketpair (baseline)"),
    ("tcp_loopback", "TCP loopback"),
    ("file_exchange", "file exchange (tmpfs, rename + poll)"),
    ("ipc_channel", "ipc-channel 0.23"),
    ("iceoryx2", "iceoryx2 0.10 (feature bench-iceoryx2)"),
    ("python_mp_queue", "Python `multiprocessing.Queue`"),
    ("python_mp_pipe", "Python `multiprocessing.Pipe`"),
    (
        "python_shared_memory_event",
        "Python `shared_memory` + `Event` hand-off",
    ),
];

const BASELINE: &str = "unix_socketpair";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Criterion's mean estimate for a benchmark, in nanoseconds per iteration.
fn criterion_mean_ns(group: &str, id: &str) -> Option<f64> {
    let path = target_dir()
        .join("criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    read_json(&path)?["mean"]["point_estimate"].as_f64()
}

/// Messages per second for every transport and size.
fn throughput(python: &Option<Value>) -> BTreeMap<(usize, &'static str), f64> {
    let mut out = BTreeMap::new();
    for (si, (size, _)) in SIZES.iter().enumerate() {
        for (id, _) in TRANSPORTS {
            let rate = if id.starts_with("python_") {
                python
                    .as_ref()
                    .and_then(|p| p["throughput"][id][*size]["msgs_per_s"].as_f64())
            } else {
                criterion_mean_ns(&format!("transports_throughput_{size}"), id).map(|ns| 1e9 / ns)
            };
            if let Some(r) = rate {
                out.insert((si, id), r);
            }
        }
    }
    out
}

/// Where the host ran the two vCPUs during each criterion benchmark:
/// `placement.json` holds a cache-line round trip before and after each
/// (the transports bench's `line_round_trip_ns`), judged against the
/// median of the run's probes (`regime_report::Placement`). Also the (min,
/// median, max) of all probes, for the footnote.
struct Placements {
    of: BTreeMap<String, Vec<regime_report::Placement>>,
    spread: Option<(f64, f64, f64)>,
}

impl Placements {
    fn read(path: &Path) -> Placements {
        let v = read_json(path).unwrap_or(Value::Null);
        let probes: Vec<(String, f64)> = v
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(id, p)| {
                ["before_ns", "after_ns"]
                    .into_iter()
                    .filter_map(move |k| p[k].as_f64().map(|ns| (id.clone(), ns)))
            })
            .collect();
        let all: Vec<f64> = probes.iter().map(|(_, ns)| *ns).collect();
        let spread = regime_report::spread(&all);
        let mut of: BTreeMap<String, Vec<regime_report::Placement>> = BTreeMap::new();
        if let Some((_, median, _)) = spread {
            for (id, ns) in probes {
                of.entry(id)
                    .or_default()
                    .push(regime_report::Placement::of(ns, median));
            }
        }
        Placements { of, spread }
    }

    /// "‡" if benchmark `id` began or ended with the vCPUs far apart, "†"
    /// if on siblings of one core, "" otherwise.
    fn mark(&self, id: &str) -> &'static str {
        use regime_report::Placement::{Far, Siblings};
        let seen = self.of.get(id).map_or(&[][..], Vec::as_slice);
        if seen.contains(&Far) {
            "‡"
        } else if seen.contains(&Siblings) {
            "†"
        } else {
            ""
        }
    }

    fn footnote(&self) -> Option<String> {
        let (lo, med, hi) = self.spread?;
        Some(format!(
            "Where the host ran the two vCPUs changes the shared-memory rows most: the bench \
             bounces a cache line between them just before and after each benchmark (probes \
             over the run: {lo:.0} / {med:.0} / {hi:.0} ns, min / median / max). ‡: a probe of \
             that benchmark was over 1.7× the median (the vCPUs far apart: every line that \
             crosses is slower); †: under 1/1.7 of it (two threads of one core: hand-offs \
             faster, bulk copies slower, as they share the core). See the regimes section.\n"
        ))
    }
}

fn fmt_rate(msgs: f64) -> String {
    if msgs >= 1e6 {
        format!("{:.2} M/s", msgs / 1e6)
    } else if msgs >= 1e3 {
        format!("{:.1} k/s", msgs / 1e3)
    } else {
        format!("{msgs:.0}/s")
    }
}

fn fmt_bytes(bps: f64) -> String {
    format!("{:.2} GB/s", bps / 1e9)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / (1 << 20) as f64);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}, {rustc}")
}

/// Escapes text for SVG (XML) content.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn chart(rates: &BTreeMap<(usize, &'static str), f64>) -> String {
    let present: Vec<(&str, &str)> = TRANSPORTS
        .iter()
        .copied()
        .filter(|(id, _)| rates.keys().any(|(_, t)| t == id))
        .collect();
    let palette = [
        "#1b5e20", "#43a047", "#81c784", "#c5e1a5", "#1565c0", "#0d47a1", "#5e35b1", "#8d6e63",
        "#f9a825", "#c62828", "#e57373", "#ffcdd2",
    ];
    let (w, h, left, top, bottom) = (980.0, 460.0, 70.0, 40.0, 60.0);
    let plot_h = h - top - bottom;
    let legend_w = 330.0;
    let plot_w = w - left - legend_w;
    let (lo, hi) = (3.0f64, 8.0f64); // 10^3 .. 10^8 msgs/s
    let y = |v: f64| top + plot_h * (1.0 - ((v.max(1.0).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="15">Messages per second between two processes (log scale)</text>"#
    );
    for e in 3..=8 {
        let yy = y(10f64.powi(e));
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">1e{e}</text>",
            left + plot_w,
            left - 6.0,
            yy + 4.0
        );
    }
    let group_w = plot_w / SIZES.len() as f64;
    let bar_w = (group_w - 20.0) / present.len().max(1) as f64;
    for (si, (size, _)) in SIZES.iter().enumerate() {
        let gx = left + si as f64 * group_w + 10.0;
        for (ti, (id, _)) in present.iter().enumerate() {
            if let Some(&r) = rates.get(&(si, *id)) {
                let x = gx + ti as f64 * bar_w;
                let top_y = y(r);
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{top_y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{id} {size}: {}</title></rect>"#,
                    bar_w * 0.9,
                    top + plot_h - top_y,
                    palette[ti % palette.len()],
                    fmt_rate(r)
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{size}</text>"#,
            gx + (group_w - 20.0) / 2.0,
            top + plot_h + 20.0
        );
    }
    for (ti, (_, label)) in present.iter().enumerate() {
        let ly = top + 10.0 + ti as f64 * 20.0;
        let lx = left + plot_w + 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            palette[ti % palette.len()],
            lx + 18.0,
            xml_escape(&label.replace('`', ""))
        );
    }
    s.push_str("</svg>\n");
    s
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bench_dir = target_dir().join("ipckit-bench");
    let python = read_json(&bench_dir.join("python.json"));
    let latency = read_json(&bench_dir.join("latency.json"));
    let rates = throughput(&python);
    let placement = Placements::read(&bench_dir.join("placement.json"));
    if rates.is_empty() {
        return Err("no results: run `cargo bench --bench transports` first".into());
    }

    let mut md = String::new();
    let _ = writeln!(md, "# ipckit transport benchmarks\n");
    let _ = writeln!(md, "Machine: {}.  ", machine());
    if let Some(p) = &python {
        let _ = writeln!(
            md,
            "Python {} (`multiprocessing`, start method `{}`).  ",
            p["python"].as_str().unwrap_or("?"),
            p["start_method"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(
        md,
        "Produced by `cargo bench --bench transports` then `cargo run --release --example bench_report`; \
         every figure is from the same bench run (criterion means; Python peers timed by Python). \
         Criterion's HTML report: `target/criterion/report/index.html`.\n"
    );

    let _ = writeln!(md, "## One-way throughput between two processes\n");
    let _ = writeln!(
        md,
        "Messages per second, bytes per second, and the ratio to the unix socketpair at the same size.\n"
    );
    let mut header = "| transport |".to_owned();
    let mut rule = "|---|".to_owned();
    for (size, _) in SIZES {
        let _ = write!(header, " {size} |");
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for (id, label) in TRANSPORTS {
        if !rates.keys().any(|(_, t)| *t == id) {
            continue;
        }
        let mut row = format!("| {label} |");
        for (si, (_, bytes)) in SIZES.iter().enumerate() {
            match (rates.get(&(si, id)), rates.get(&(si, BASELINE))) {
                (Some(&r), base) => {
                    let ratio = base.map_or(String::new(), |b| format!(", {:.2}×", r / b));
                    let mark =
                        placement.mark(&format!("transports_throughput/{}/{id}", SIZES[si].0));
                    let _ = write!(
                        row,
                        " {}{mark} · {}{ratio} |",
                        fmt_rate(r),
                        fmt_bytes(r * bytes)
                    );
                }
                (None, _) => row.push_str(" — |"),
            }
        }
        let _ = writeln!(md, "{row}");
    }
    // Copying 1 MiB within one process bounds any 1 MiB transport: the
    // Queue copies in and out, so half of memcpy's rate is its ceiling.
    if let Some(ns) = criterion_mean_ns("memcpy_1MiB", "copy_from_slice") {
        let memcpy = 1048576.0 * 1e9 / ns;
        let _ = write!(
            md,
            "\n`memcpy` of 1 MiB within one process (`memcpy_1MiB`): {}",
            fmt_bytes(memcpy)
        );
        if let Some(q) = rates.get(&(3, "ipckit_queue")) {
            let _ = write!(
                md,
                "; the `Queue`'s 1 MiB one-way ({}) is {:.0}% of it (it copies each byte twice, in and out)",
                fmt_bytes(q * 1048576.0),
                100.0 * q * 1048576.0 / memcpy
            );
        }
        let _ = writeln!(md, ".");
        // The two copies of a one-way transport run at once, one per CPU:
        // what each gets while the other CPU copies too (less when the host
        // runs the two vCPUs as threads of one core) is the same run's
        // ceiling for a transport that copies in on one side and out on
        // the other.
        if let Some(ns) = criterion_mean_ns("memcpy_1MiB", "copy_from_slice_both_cpus") {
            let both = 1048576.0 * 1e9 / ns;
            let _ = write!(
                md,
                "While the other CPU copies 1 MiB buffers of its own without pause \
                 (`copy_from_slice_both_cpus`{}): {} per copy, {:.0}% of the copy alone",
                placement.mark("memcpy_1MiB/copy_from_slice_both_cpus"),
                fmt_bytes(both),
                100.0 * both / memcpy
            );
            if let Some(q) = rates.get(&(3, "ipckit_queue")) {
                let _ = write!(
                    md,
                    "; the `Queue`'s 1 MiB one-way is {:.0}% of that",
                    100.0 * q * 1048576.0 / both
                );
            }
            let _ = writeln!(md, ".");
        }
    }
    if let Some(note) = placement.footnote() {
        let _ = write!(md, "\n{note}");
    }
    let _ = writeln!(md, "\n![throughput](throughput.svg)\n");

    let _ = writeln!(md, "## 64 B round trip (the child echoes)\n");
    let _ = writeln!(md, "| transport | mean | p50 | p99 | mean vs socketpair |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    let lat = |id: &str| -> Option<Value> {
        if id.starts_with("python_") {
            python.as_ref().map(|p| p["latency"][id].clone())
        } else {
            latency.as_ref().map(|l| l[id].clone())
        }
    };
    let base_mean = lat(BASELINE).and_then(|v| v["mean_us"].as_f64());
    if let Some(ns) = criterion_mean_ns("transports_round_trip_64B", "raw_futex") {
        let _ = writeln!(
            md,
            "| raw shared futex word, no spinning (floor for a sleeping peer) | {:.2} µs | | | |",
            ns / 1e3
        );
    }
    for (id, label) in TRANSPORTS {
        let Some(v) = lat(id) else { continue };
        let (Some(mean), Some(p50), Some(p99)) = (
            v["mean_us"].as_f64(),
            v["p50_us"].as_f64(),
            v["p99_us"].as_f64(),
        ) else {
            continue;
        };
        let ratio = base_mean.map_or(String::new(), |b| format!("{:.2}×", b / mean));
        let mark = placement.mark(&format!("transports_round_trip_64B/{id}"));
        let _ = writeln!(
            md,
            "| {label}{mark} | {mean:.2} µs | {p50:.2} µs | {p99:.2} µs | {ratio} |"
        );
    }
    let _ = writeln!(
        md,
        "\n(\"vs socketpair\" is how many times faster than the socketpair's mean.)\n"
    );

    let _ = writeln!(md, "## Scaling: one ipckit `Queue`, 64 B messages\n");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        md,
        "Total messages per second with 1 producer → N consumer processes and N producers → 1 consumer; \
         this machine has {cores} cores, so N > {cores} measures contention, not parallelism.\n"
    );
    let _ = writeln!(md, "| shape | messages/s |");
    let _ = writeln!(md, "|---|---|");
    for (p, c) in [(1, 1), (1, 2), (1, 4), (2, 1), (4, 1)] {
        if let Some(ns) = criterion_mean_ns("transports_scaling_64B", &format!("{p}p_{c}c")) {
            let _ = writeln!(
                md,
                "| {p} producer{} → {c} consumer{} | {} |",
                if p > 1 { "s" } else { "" },
                if c > 1 { "s" } else { "" },
                fmt_rate(1e9 / ns)
            );
        }
    }

    if let Some(regimes) = read_json(&bench_dir.join("regimes.json")) {
        let _ = writeln!(
            md,
            "\n## Regimes: ring size and load, `Queue` against the socketpair\n"
        );
        md.push_str(&regime_report::markdown(&regimes));
    }

    let docs = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs"));
    std::fs::create_dir_all(&docs)?;
    std::fs::write(docs.join("benchmarks.md"), &md)?;
    std::fs::write(docs.join("throughput.svg"), chart(&rates))?;
    println!("{md}");
    println!(
        "wrote {} and {}",
        docs.join("benchmarks.md").display(),
        docs.join("throughput.svg").display()
    );
    Ok(())
}
