//! The regime tables (ring size × machine load, ipckit `Queue` against the
//! unix socketpair) from `target/ipckit-bench/regimes.json`. One formatter
//! for both readers: the transports bench prints it at the end of its
//! regime section, `examples/bench_report.rs` (which includes this file by
//! path) writes it into `docs/benchmarks.md`.

use std::fmt::Write as _;

use serde_json::Value;

/// min, median, max of per-run rates (the median of an even count is the
/// mean of the middle two).
pub fn spread(rates: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = rates.iter().copied().filter(|r| r.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

/// Three significant figures of `x` msgs/s in `unit` (M/s or k/s).
fn figure(x: f64, (div, _): (f64, &str)) -> String {
    let x = x / div;
    match x {
        x if x >= 100.0 => format!("{x:.0}"),
        x if x >= 10.0 => format!("{x:.1}"),
        x => format!("{x:.2}"),
    }
}

/// M/s for rows that reach a million per second, k/s below.
fn unit_for(max: f64) -> (f64, &'static str) {
    if max >= 1e6 {
        (1e6, "M/s")
    } else {
        (1e3, "k/s")
    }
}

/// Min / median / max, three significant figures, one unit per cell.
fn rates_cell((min, med, max): (f64, f64, f64)) -> String {
    let u = unit_for(max);
    format!(
        "{} / {} / {} {}",
        figure(min, u),
        figure(med, u),
        figure(max, u),
        u.1
    )
}

/// One rate, three significant figures with its unit.
fn rate_cell(x: f64) -> String {
    let u = unit_for(x);
    format!("{} {}", figure(x, u), u.1)
}

fn us(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} µs")
    } else if x >= 10.0 {
        format!("{x:.1} µs")
    } else {
        format!("{x:.2} µs")
    }
}

/// A ratio, with two decimals below 1 (0.07×, not 0.1×).
fn ratio(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.2}×")
    } else {
        format!("{x:.1}×")
    }
}

fn ring_label(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// "k/n": in how many of a row's runs parent and child ended on one CPU.
fn one_cpu(row: &Value) -> String {
    let runs = row["same_cpu"].as_array().map_or(&[][..], Vec::as_slice);
    let known: Vec<bool> = runs.iter().filter_map(Value::as_bool).collect();
    if known.is_empty() {
        return "?".into();
    }
    format!("{}/{}", known.iter().filter(|&&b| b).count(), known.len())
}

fn rates(row: &Value) -> Vec<f64> {
    row["msgs_per_s"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// A row's per-run cache-line round trips (ns; `None` where not probed).
fn lines(row: &Value) -> Vec<Option<f64>> {
    row["line_rtt_ns"]
        .as_array()
        .map(|a| a.iter().map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Where the host ran the two vCPUs during a measurement, judged by a
/// cache-line round trip between them (`common::line_round_trip_ns`)
/// against the median of the run's probes: on this project's machine the
/// host runs them as siblings of one core (~45 ns: small hand-offs faster,
/// bulk copies slower, as the two share one core), on one core complex
/// (~100 ns, most of the time) or far apart (~500 ns: every line that
/// crosses between them is slower).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Siblings,
    Typical,
    Far,
}

/// How far from the run's median probe a placement counts as another.
const PLACEMENT_STEP: f64 = 1.7;

impl Placement {
    pub fn of(ns: f64, median: f64) -> Placement {
        if ns > median * PLACEMENT_STEP {
            Placement::Far
        } else if ns < median / PLACEMENT_STEP {
            Placement::Siblings
        } else {
            Placement::Typical
        }
    }
}

/// The rates of `row` by the placement of their runs: (typical, far,
/// siblings).
fn by_placement(row: &Value, median: f64) -> [Vec<f64>; 3] {
    let mut out: [Vec<f64>; 3] = Default::default();
    for (rate, line) in rates(row).into_iter().zip(lines(row)) {
        let Some(ns) = line else { continue };
        let i = match Placement::of(ns, median) {
            Placement::Typical => 0,
            Placement::Far => 1,
            Placement::Siblings => 2,
        };
        out[i].push(rate);
    }
    out
}

/// The table of one load section's throughput by host placement, if its
/// runs were probed (see `common::line_round_trip_ns`).
fn placement_table(md: &mut String, label: &str, of_load: &[&Value]) {
    let all: Vec<f64> = of_load.iter().flat_map(|r| lines(r)).flatten().collect();
    let Some((fastest, median, slowest)) = spread(&all) else {
        return;
    };
    let _ = writeln!(
        md,
        "\n{label}, by where the host ran the two virtual CPUs: before each run the bench \
         bounces a cache line between them (`line_round_trip_ns`), {fastest:.0} / {median:.0} / \
         {slowest:.0} ns (min / median / max over the section's runs). A run is \"far\" when \
         its round trip was over {PLACEMENT_STEP}× the median (the vCPUs far apart: every line \
         that crosses is slower), on \"siblings\" when under 1/{PLACEMENT_STEP} of it (two \
         threads of one core, which share its caches and its execution units), typical \
         otherwise. Ratios and the stability target within one placement (medians):\n"
    );
    let _ = writeln!(
        md,
        "| regime | runs: typical · far · siblings | typical: Queue, socketpair, ratio | Queue \
         min ÷ median, typical | far: Queue, socketpair, ratio | siblings: Queue, socketpair, \
         ratio |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let sock = of_load
        .iter()
        .find(|r| r["transport"] == "unix_socketpair")
        .map(|r| by_placement(r, median))
        .unwrap_or_default();
    let med = |v: &[f64]| spread(v).map(|s| s.1);
    let group = |q: &[f64], s: &[f64]| match (med(q), med(s)) {
        (Some(x), Some(y)) => format!("{}, {}, {}", rate_cell(x), rate_cell(y), ratio(x / y)),
        (Some(x), None) => format!("{}, —, —", rate_cell(x)),
        _ => "—".into(),
    };
    for q in of_load.iter().filter(|r| r["transport"] == "ipckit_queue") {
        let [typical, far, siblings] = by_placement(q, median);
        let stability =
            spread(&typical).map_or("—".into(), |(lo, m, _)| format!("{:.2}", lo / m));
        let _ = writeln!(
            md,
            "| {label}, {} ring | {} · {} · {} | {} | {stability} | {} | {} |",
            ring_label(q["ring"].as_u64().unwrap_or(0)),
            typical.len(),
            far.len(),
            siblings.len(),
            group(&typical, &sock[0]),
            group(&far, &sock[1]),
            group(&siblings, &sock[2]),
        );
    }
}

/// Per run of `row`, the fractions of its wall-clock time in `key` ("ran",
/// "waited": [bench thread, child]; "stolen": one figure), `None` where
/// not recorded (results older than the fields).
fn shares(row: &Value, key: &str) -> Vec<Option<Vec<Option<f64>>>> {
    let Some(runs) = row[key].as_array() else {
        return Vec::new();
    };
    runs.iter()
        .map(|r| match r {
            Value::Array(a) => Some(a.iter().map(Value::as_f64).collect()),
            Value::Number(n) => Some(vec![n.as_f64()]),
            _ => None,
        })
        .collect()
}

fn percent(x: Option<f64>) -> String {
    x.map_or("?".into(), |x| format!("{:.0}%", 100.0 * x))
}

/// The slowest run of each Queue row, against the row's median, with where
/// its time went: how much of the run each side was on a CPU and how much
/// it waited runnable for one (the guest's scheduler), and how much the
/// hypervisor stole from the guest's CPUs (the host's). A Queue whose own
/// waiting made a run slow shows a side neither running nor waiting (asleep
/// while there was work), or both sides running with nothing stolen.
fn slowest_runs(md: &mut String, tp: &[Value]) {
    let rows: Vec<&Value> = tp
        .iter()
        .filter(|r| r["transport"] == "ipckit_queue" && r["ran"].is_array())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nThe slowest run of each Queue row and where its time went, as shares of the \
         run's wall-clock time (`/proc/<pid>/schedstat` of the producer's thread and the \
         consumer's, whose run time excludes what the hypervisor took; `steal` of \
         `/proc/stat`, summed over the CPUs, in 10 ms steps). The row's median run beside \
         it for comparison:\n"
    );
    let _ = writeln!(
        md,
        "| regime | slowest ÷ median | on a CPU: producer, consumer (median run) | waiting \
         for a CPU: producer, consumer (median run) | stolen (median run) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for r in rows {
        let rate = rates(r);
        let Some((_, med, _)) = spread(&rate) else {
            continue;
        };
        let mut order: Vec<usize> = (0..rate.len()).collect();
        order.sort_by(|&a, &b| rate[a].total_cmp(&rate[b]));
        let (slow, mid) = (order[0], order[order.len() / 2]);
        let (ran, waited, stolen) = (shares(r, "ran"), shares(r, "waited"), shares(r, "stolen"));
        let pair = |v: &[Option<Vec<Option<f64>>>], i: usize| -> String {
            match v.get(i).and_then(Option::as_ref) {
                Some(x) => format!(
                    "{}, {}",
                    percent(x.first().copied().flatten()),
                    percent(x.get(1).copied().flatten())
                ),
                None => "?".into(),
            }
        };
        let one = |v: &[Option<Vec<Option<f64>>>], i: usize| -> String {
            percent(
                v.get(i)
                    .and_then(Option::as_ref)
                    .and_then(|x| x.first().copied().flatten()),
            )
        };
        let _ = writeln!(
            md,
            "| {}, {} ring | {:.2} | {} ({}) | {} ({}) | {} ({}) |",
            r["load_label"]
                .as_str()
                .or(r["load"].as_str())
                .unwrap_or("?"),
            ring_label(r["ring"].as_u64().unwrap_or(0)),
            rate[slow] / med,
            pair(&ran, slow),
            pair(&ran, mid),
            pair(&waited, slow),
            pair(&waited, mid),
            one(&stolen, slow),
            one(&stolen, mid),
        );
    }
}

/// The Markdown tables (throughput, then round trip), without a heading.
pub fn markdown(v: &Value) -> String {
    let mut md = String::new();
    let empty = Vec::new();
    let tp = v["throughput"].as_array().unwrap_or(&empty);
    let rt = v["round_trip"].as_array().unwrap_or(&empty);
    let loads = v["loads"].as_array().unwrap_or(&empty);
    let runs = v["runs"].as_u64().unwrap_or(0);
    let _ = writeln!(
        md,
        "64 B messages, producer process → consumer process, one way. Each regime is \
         {runs} separate runs (a fresh queue or socketpair and a fresh child per run, the \
         rows interleaved run by run), each run a fixed count of messages per row (what took \
         ~{:.0} ms in a calibration run) after a warm-up that laps the ring; messages per second over the runs as min / median / max. \
         \"Loaded\" is one busy-loop process per core ({}), started by the bench before the \
         regime and killed after it. The socketpair has no ring: it is measured once per \
         load and repeated on each ring's row. Target for the Queue's stability: \
         min ≥ 0.5 × median. \"One CPU\": in how many runs parent and child were on the \
         same CPU when the run ended (processes float; a sample, not a guarantee for the \
         whole run).{}\n",
        v["run_target_s"].as_f64().unwrap_or(0.0) * 1e3,
        v["cores"].as_u64().unwrap_or(0),
        if v["quick"].as_bool() == Some(true) {
            " **Quick mode** (CI's criterion flags): short runs, indicative only."
        } else {
            ""
        },
    );
    let _ = writeln!(
        md,
        "| regime | Queue min / median / max | socketpair min / median / max | \
         ratio of medians | Queue min ÷ median | one CPU (Queue · socketpair) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for load in loads {
        let name = load["load"].as_str().unwrap_or("");
        let label = load["label"].as_str().unwrap_or(name);
        let of_load = |t: &'static str| {
            tp.iter()
                .filter(move |r| r["load"].as_str() == Some(name) && r["transport"] == t)
        };
        let sock_row = of_load("unix_socketpair").next();
        let sock = sock_row.and_then(|r| spread(&rates(r)));
        let sock_cpu = sock_row.map_or("?".into(), one_cpu);
        for q in of_load("ipckit_queue") {
            let Some(qs) = spread(&rates(q)) else {
                continue;
            };
            let ring = ring_label(q["ring"].as_u64().unwrap_or(0));
            let (sock_cell, ratio) = match sock {
                Some(s) => (rates_cell(s), ratio(qs.1 / s.1)),
                None => ("—".into(), "—".into()),
            };
            let _ = writeln!(
                md,
                "| {label}, {ring} ring | {} | {sock_cell} | {ratio} | {:.2} | {} · {sock_cpu} |",
                rates_cell(qs),
                qs.0 / qs.1,
                one_cpu(q)
            );
        }
    }
    for load in loads {
        let name = load["load"].as_str().unwrap_or("");
        let label = load["label"].as_str().unwrap_or(name);
        let rows: Vec<&Value> = tp
            .iter()
            .filter(|r| r["load"].as_str() == Some(name))
            .collect();
        placement_table(&mut md, label, &rows);
    }
    slowest_runs(&mut md, tp);
    let _ = writeln!(
        md,
        "\n64 B round trip (the child echoes), every trip timed: {runs} runs per row of {} \
         trips each (fewer if a run passes {:.0} s), a fresh link per run, the Queue on a {} \
         ring. The p50 of each run, as min / median / max over the runs, and the p99 over all \
         trips:\n",
        v["trips_per_run"].as_u64().unwrap_or(0),
        v["trip_cap_s"].as_f64().unwrap_or(0.0),
        rt.iter()
            .find_map(|r| r["ring"].as_u64())
            .map_or("?".into(), ring_label),
    );
    let _ = writeln!(
        md,
        "| load | Queue p50 min / median / max | Queue p99 | socketpair p50 min / median / max \
         | socketpair p99 | ratio of median p50s | one CPU (Queue · socketpair) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for load in loads {
        let name = load["load"].as_str().unwrap_or("");
        let label = load["label"].as_str().unwrap_or(name);
        let row = |t: &str| {
            rt.iter()
                .find(|r| r["load"].as_str() == Some(name) && r["transport"] == t)
        };
        // (median of the runs' p50, the p50 cell, the p99 cell, one CPU)
        let cells = |r: Option<&Value>| -> Option<(f64, String, String, String)> {
            let r = r?;
            let runs: Vec<f64> = r["run_p50_us"]
                .as_array()?
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            let (lo, med, hi) = spread(&runs)?;
            Some((
                med,
                format!("{} / {} / {}", us(lo), us(med), us(hi)),
                us(r["p99_us"].as_f64()?),
                one_cpu(r),
            ))
        };
        let (Some(q), Some(s)) = (cells(row("ipckit_queue")), cells(row("unix_socketpair"))) else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {} · {} |",
            q.1,
            q.2,
            s.1,
            s.2,
            ratio(s.0 / q.0),
            q.3,
            s.3
        );
    }
    let _ = writeln!(
        md,
        "\nLoad average (1, 5, 15 min) when the section began: {}; before the loaded \
         part: {} (the busy loops raise it afterwards). The section took {:.0} s.",
        v["loadavg_start"].as_str().unwrap_or("?"),
        loads
            .iter()
            .find(|l| l["load"] == "loaded")
            .and_then(|l| l["loadavg_before"].as_str())
            .unwrap_or("?"),
        v["seconds"].as_f64().unwrap_or(0.0),
    );
    // CPU time the hypervisor gave to other guests (a VM's busy host slows
    // and spreads every figure); absent in results older than the column.
    let stolen: Vec<String> = loads
        .iter()
        .filter_map(|l| {
            let p = l["steal_percent"].as_f64()?;
            Some(format!("{} {p:.1}%", l["load"].as_str().unwrap_or("?")))
        })
        .collect();
    if !stolen.is_empty() {
        let _ = writeln!(
            md,
            "CPU time stolen by the hypervisor (`steal` in /proc/stat): {}.",
            stolen.join(", ")
        );
    }
    md
}
