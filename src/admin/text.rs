//! Text and JSON renderings of what [`admin`](super) reports, as the
//! `ipckit` tool prints them. Pure functions: no system calls, so Miri runs
//! their tests.

use std::fmt::Write;
use std::time::Duration;

use super::{Health, Inspection, LockInfo, ObjectInfo, QueueInfo};

/// `s` as a JSON string literal, quotes included. Escapes `"`, `\` and every
/// control character, so any name (names may hold any byte but `/` and NUL)
/// gives valid JSON.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration as an age: `45s`, `3m12s`, `2h05m`, `3d04h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A byte count, short: `512B`, `4.0K`, `1.5M`, `2.0G` (powers of 1024).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// `"process 12"` or `"processes 12, 34"`.
pub fn pid_list(noun: &str, pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let plural = if pids.len() == 1 { "" } else { "es" };
    format!("{noun}{plural} {}", list.join(", "))
}

fn creator_cell(o: &ObjectInfo) -> String {
    match o.creator {
        Some(c) => format!("{} {}", c.pid, if c.alive { "alive" } else { "dead" }),
        None => "-".to_owned(),
    }
}

fn status_cell(o: &ObjectInfo) -> String {
    match &o.health {
        Health::Corrupt(why) => format!("corrupt: {why}"),
        _ => o.status().to_owned(),
    }
}

/// The `ls` table: a header line and one line per object.
pub fn table(objects: &[ObjectInfo]) -> String {
    let mut rows: Vec<[String; 9]> = vec![[
        "NAME".into(),
        "KIND".into(),
        "SIZE".into(),
        "OWNER".into(),
        "MODE".into(),
        "CREATOR".into(),
        "USERS".into(),
        "AGE".into(),
        "STATUS".into(),
    ]];
    for o in objects {
        rows.push([
            o.name.escape_debug().to_string(),
            o.kind_name(),
            size(o.size),
            o.uid.to_string(),
            format!("{:04o}", o.mode),
            creator_cell(o),
            o.users.len().to_string(),
            o.age.map_or_else(|| "-".to_owned(), age),
            status_cell(o),
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn opt_u64(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

fn pids_json(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!("[{}]", list.join(","))
}

/// One object as a JSON object.
pub fn object_json(o: &ObjectInfo) -> String {
    let corrupt = match &o.health {
        Health::Corrupt(why) => json_string(why),
        _ => "null".to_owned(),
    };
    let (creator_pid, creator_alive) = match o.creator {
        Some(c) => (c.pid.to_string(), c.alive.to_string()),
        None => ("null".to_owned(), "null".to_owned()),
    };
    format!(
        concat!(
            "{{\"name\":{},\"kind\":{},\"type\":{},\"size\":{},\"uid\":{},\"mode\":\"{:04o}\",",
            "\"ipckit\":{},\"status\":{},\"corrupt\":{},\"creator_pid\":{},",
            "\"creator_alive\":{},\"users\":{},\"stale\":{},\"age_secs\":{}}}"
        ),
        json_string(&o.name),
        json_string(&o.kind_name()),
        o.type_name()
            .map_or_else(|| "null".to_owned(), |t| json_string(&t)),
        o.size,
        o.uid,
        o.mode,
        o.is_ipckit(),
        json_string(o.status()),
        corrupt,
        creator_pid,
        creator_alive,
        pids_json(&o.users),
        o.is_stale(),
        opt_u64(o.age.map(|a| a.as_secs())),
    )
}

/// A list of objects as a JSON array, one object per line.
pub fn objects_json(objects: &[ObjectInfo]) -> String {
    let items: Vec<String> = objects.iter().map(object_json).collect();
    if items.is_empty() {
        "[]\n".to_owned()
    } else {
        format!("[\n{}\n]\n", items.join(",\n"))
    }
}

/// One lock in words: `free`, `held by thread 12 of process 12 (alive)`,
/// `free; its last holder died holding it`, ….
pub fn lock_text(l: &LockInfo) -> String {
    let mut s = match l.owner {
        None => "free".to_owned(),
        Some(o) => {
            let who = match o.pid {
                Some(pid) => format!("thread {} of process {pid}", o.tid),
                None => format!("thread {}", o.tid),
            };
            let state = if o.alive { "alive" } else { "dead" };
            format!("held by {who} ({state})")
        }
    };
    if l.owner_died {
        s.push_str("; its holder died holding it (the next locker takes it over)");
    }
    if l.inconsistent {
        s.push_str("; data not marked consistent since an owner died");
    }
    if l.waiters {
        s.push_str("; threads waiting");
    }
    s
}

fn lock_json(l: &LockInfo) -> String {
    let (tid, pid, alive) = match l.owner {
        Some(o) => (
            o.tid.to_string(),
            o.pid.map_or_else(|| "null".to_owned(), |p| p.to_string()),
            o.alive.to_string(),
        ),
        None => ("null".into(), "null".into(), "null".into()),
    };
    format!(
        concat!(
            "{{\"name\":{},\"owner_tid\":{},\"owner_pid\":{},\"owner_alive\":{},",
            "\"owner_died\":{},\"inconsistent\":{},\"waiters\":{}}}"
        ),
        json_string(l.name),
        tid,
        pid,
        alive,
        l.owner_died,
        l.inconsistent,
        l.waiters
    )
}

fn queue_json(q: &QueueInfo) -> String {
    format!(
        concat!(
            "{{\"capacity\":{},\"max_items\":{},\"items\":{},\"used_bytes\":{},",
            "\"messages_put\":{},\"messages_got\":{},\"closed\":{},\"stream_open\":{},",
            "\"waiting_producers\":{},\"waiting_consumers\":{},\"partial_reader\":{},",
            "\"unfinished_tasks\":{}}}"
        ),
        q.capacity,
        q.max_items,
        q.items,
        q.used_bytes,
        q.messages_put,
        q.messages_got,
        q.closed,
        q.stream_open,
        q.waiting_producers,
        q.waiting_consumers,
        opt_u64(q.partial_reader.map(u64::from)),
        opt_u64(q.unfinished_tasks)
    )
}

/// An inspection as a JSON object: the object's fields plus `header`,
/// `queue`, `locks` and `note`.
pub fn inspection_json(i: &Inspection) -> String {
    let object = object_json(&i.info);
    let header = match &i.info.header {
        Some(h) => format!(
            concat!(
                "{{\"version\":{},\"kind_code\":{},\"total_len\":{},\"type_name\":{},",
                "\"type_size\":{},\"type_align\":{},\"param\":{},\"creator_pid\":{},",
                "\"creator_start_time\":{},\"created_unix_nanos\":{}}}"
            ),
            h.version,
            h.kind_code,
            h.total_len,
            json_string(&h.type_name()),
            h.type_size,
            h.type_align,
            h.param,
            h.creator_pid,
            h.creator_start_time,
            h.created_unix_nanos
        ),
        None => "null".to_owned(),
    };
    let queue = i
        .queue
        .as_ref()
        .map_or_else(|| "null".to_owned(), queue_json);
    let locks: Vec<String> = i.locks.iter().map(lock_json).collect();
    let note = i
        .note
        .as_deref()
        .map_or_else(|| "null".to_owned(), json_string);
    let contents = i
        .contents
        .as_deref()
        .map_or_else(|| "null".to_owned(), json_string);
    // Splice the extra fields into the object's JSON (it ends with '}').
    format!(
        "{},\"header\":{header},\"queue\":{queue},\"locks\":[{}],\"contents\":{contents},\"note\":{note}}}\n",
        &object[..object.len() - 1],
        locks.join(",")
    )
}

/// An inspection for people, one `key: value` per line.
pub fn inspection_text(i: &Inspection) -> String {
    let o = &i.info;
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{:<18} {v}", format!("{k}:"));
    };
    line("name", o.name.escape_debug().to_string());
    line("kind", o.kind_name());
    line("status", status_cell(o));
    line("size", format!("{} bytes", o.size));
    line("owner", format!("uid {}, mode {:04o}", o.uid, o.mode));
    if let Some(t) = o.type_name() {
        line("element type", t);
    }
    if let Some(h) = &o.header {
        line("layout version", h.version.to_string());
        line("object length", format!("{} bytes", h.total_len));
        line("parameter", h.param.to_string());
    }
    if let Some(c) = o.creator {
        line(
            "creator",
            format!(
                "pid {} (start time {}), {}",
                c.pid,
                c.start_time,
                if c.alive { "alive" } else { "dead" }
            ),
        );
    }
    if let Some(a) = o.age {
        line("age", age(a));
    }
    line(
        "in use by",
        if o.users.is_empty() {
            "no live process".to_owned()
        } else {
            pid_list("process", &o.users)
        },
    );
    if let Some(q) = &i.queue {
        line("capacity", format!("{} bytes", q.capacity));
        line(
            "max items",
            if q.max_items == crate::queue::MAX_ITEMS {
                format!("{} (no limit set)", q.max_items)
            } else {
                q.max_items.to_string()
            },
        );
        line("items", q.items.to_string());
        line("bytes used", format!("{} of {}", q.used_bytes, q.capacity));
        line("messages put", q.messages_put.to_string());
        line("messages got", q.messages_got.to_string());
        line("closed", if q.closed { "yes" } else { "no" }.to_owned());
        if q.stream_open {
            line("stream", "a large message is being streamed".to_owned());
        }
        line("waiting producers", q.waiting_producers.to_string());
        line("waiting consumers", q.waiting_consumers.to_string());
        if let Some(pid) = q.partial_reader {
            line(
                "partial read",
                format!("pid {pid} keeps the first part of a message (it timed out mid-stream)"),
            );
        }
        if let Some(u) = q.unfinished_tasks {
            line("unfinished tasks", u.to_string());
        }
    }
    for l in &i.locks {
        line(l.name, lock_text(l));
    }
    if let Some(c) = &i.contents {
        let what = match o.kind() {
            Some(crate::layout::header::ObjectKind::Array) => "elements",
            Some(crate::layout::header::ObjectKind::Pool) => "tasks",
            _ => "value",
        };
        if what == "tasks" {
            line(what, c.clone());
        } else {
            line(what, format!("{c} (read without the lock)"));
        }
    }
    if let Some(n) = &i.note {
        line("note", n.clone());
    }
    out
}

/// Messages per second from a counter difference over `elapsed`.
pub fn rate(delta: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "-".to_owned();
    }
    format!("{:.1}", delta as f64 / secs)
}

/// The header line of `watch`.
pub fn watch_header() -> String {
    format!(
        "{:>8}  {:>10}  {:>12}  {:>10}  {:>10}  {}",
        "TIME", "ITEMS", "BYTES", "PUT/S", "GET/S", "STATE"
    )
}

/// The column names of `watch` on a mutex, value or array.
pub fn watch_object_header() -> String {
    format!("{:>8}  {:<40}  {}", "TIME", "LOCK", "CONTENTS")
}

/// One `watch` line for a mutex, value or array: its lock and contents.
pub fn watch_object_line(at: Duration, i: &Inspection) -> String {
    let lock = i.locks.first().map_or_else(|| "-".to_owned(), lock_text);
    format!(
        "{:>8}  {:<40}  {}",
        format!("{:.1}s", at.as_secs_f64()),
        lock,
        i.contents.as_deref().or(i.note.as_deref()).unwrap_or("-")
    )
}

/// One `watch` line: the queue now, and rates since `prev` (taken
/// `elapsed` earlier), if any. `at` is the time since watching started.
pub fn watch_line(
    at: Duration,
    now: &QueueInfo,
    prev: Option<&QueueInfo>,
    elapsed: Duration,
) -> String {
    let (put, got) = match prev {
        Some(p) => (
            rate(
                super::counter_delta(p.messages_put, now.messages_put),
                elapsed,
            ),
            rate(
                super::counter_delta(p.messages_got, now.messages_got),
                elapsed,
            ),
        ),
        None => ("-".to_owned(), "-".to_owned()),
    };
    format!(
        "{:>8}  {:>10}  {:>12}  {:>10}  {:>10}  {}",
        format!("{:.1}s", at.as_secs_f64()),
        now.items,
        now.used_bytes,
        put,
        got,
        if now.closed { "closed" } else { "open" }
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Creator, LockOwner};
    use super::*;
    use crate::layout::TypeFingerprint;
    use crate::layout::header::{Header, ObjectKind};

    fn object(name: &str, health: Health, alive: bool, users: Vec<u32>) -> ObjectInfo {
        let header = matches!(health, Health::Ready).then(|| {
            let mut h = Header::new(ObjectKind::Queue, TypeFingerprint::of::<u64>(), 8192, 4096);
            h.creator_pid = 42;
            h
        });
        ObjectInfo {
            name: name.to_owned(),
            size: 8192,
            uid: 1000,
            mode: 0o600,
            health,
            creator: header.map(|_| Creator {
                pid: 42,
                start_time: 7,
                alive,
            }),
            header,
            users,
            age: Some(Duration::from_secs(75)),
            dev: 0,
            ino: 0,
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("plain"), "\"plain\"");
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(json_string("l1\nl2\t\r"), "\"l1\\nl2\\t\\r\"");
        assert_eq!(
            json_string("\u{1}\u{1f}\u{7f}"),
            "\"\\u0001\\u001f\\u007f\""
        );
        assert_eq!(json_string("héllo ✓"), "\"héllo ✓\"");
        assert_eq!(json_string(""), "\"\"");
    }

    #[test]
    fn ages_and_sizes() {
        assert_eq!(age(Duration::from_secs(0)), "0s");
        assert_eq!(age(Duration::from_secs(59)), "59s");
        assert_eq!(age(Duration::from_secs(192)), "3m12s");
        assert_eq!(age(Duration::from_secs(2 * 3600 + 5 * 60 + 9)), "2h05m");
        assert_eq!(age(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d04h");
        assert_eq!(size(0), "0B");
        assert_eq!(size(1023), "1023B");
        assert_eq!(size(4096), "4.0K");
        assert_eq!(size(1536 * 1024), "1.5M");
        assert_eq!(size(u64::MAX), "16384.0P");
        assert_eq!(pid_list("process", &[7]), "process 7");
        assert_eq!(pid_list("process", &[7, 8]), "processes 7, 8");
    }

    #[test]
    fn statuses() {
        assert_eq!(object("a", Health::Ready, true, vec![]).status(), "live");
        let stale = object("a", Health::Ready, false, vec![]);
        assert!(stale.is_stale());
        assert_eq!(stale.status(), "stale");
        let orphan = object("a", Health::Ready, false, vec![9]);
        assert!(!orphan.is_stale());
        assert_eq!(orphan.status(), "orphaned");
        let corrupt = object("a", Health::Corrupt("bad".into()), false, vec![]);
        assert!(!corrupt.is_stale());
        assert_eq!(corrupt.kind_name(), "?");
        let foreign = object("a", Health::Foreign, false, vec![]);
        assert!(!foreign.is_stale() && !foreign.is_ipckit());
        assert_eq!(foreign.kind_name(), "-");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&[
            object("jobs", Health::Ready, true, vec![1, 2]),
            object("old-results", Health::Ready, false, vec![]),
            object(
                "bad",
                Health::Corrupt("header checksum mismatch".into()),
                false,
                vec![],
            ),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with(
                "NAME         KIND   SIZE  OWNER  MODE  CREATOR   USERS  AGE    STATUS"
            ),
            "{t}"
        );
        assert!(
            lines[1]
                .starts_with("jobs         Queue  8.0K  1000   0600  42 alive  2      1m15s  live"),
            "{t}"
        );
        assert!(lines[2].ends_with("42 dead   0      1m15s  stale"), "{t}");
        assert!(
            lines[3].ends_with("corrupt: header checksum mismatch"),
            "{t}"
        );
    }

    #[test]
    fn object_json_is_complete() {
        let j = object_json(&object("a\"b", Health::Ready, false, vec![3, 4]));
        assert_eq!(
            j,
            concat!(
                "{\"name\":\"a\\\"b\",\"kind\":\"Queue\",\"type\":\"u64\",\"size\":8192,\"uid\":1000,\"mode\":\"0600\",",
                "\"ipckit\":true,\"status\":\"orphaned\",\"corrupt\":null,\"creator_pid\":42,",
                "\"creator_alive\":false,\"users\":[3,4],\"stale\":false,\"age_secs\":75}"
            )
        );
        let j = object_json(&object("c", Health::Corrupt("x\ny".into()), false, vec![]));
        assert!(j.contains("\"corrupt\":\"x\\ny\""), "{j}");
        assert!(j.contains("\"creator_pid\":null"), "{j}");
        assert_eq!(objects_json(&[]), "[]\n");
    }

    #[test]
    fn inspections_render() {
        let lock = LockInfo {
            name: "producer lock",
            owner: Some(LockOwner {
                tid: 12,
                pid: None,
                alive: false,
            }),
            owner_died: true,
            inconsistent: false,
            waiters: false,
        };
        let held = LockInfo {
            name: "consumer lock",
            owner: Some(LockOwner {
                tid: 10,
                pid: Some(9),
                alive: true,
            }),
            owner_died: false,
            inconsistent: false,
            waiters: true,
        };
        let q = QueueInfo {
            capacity: 4096,
            max_items: 10,
            items: 3,
            used_bytes: 48,
            messages_put: 5,
            messages_got: 2,
            closed: true,
            stream_open: false,
            waiting_producers: 0,
            waiting_consumers: 1,
            partial_reader: None,
            unfinished_tasks: None,
        };
        let i = Inspection {
            info: object("jobs", Health::Ready, true, vec![1]),
            queue: Some(q),
            locks: vec![lock, held],
            contents: None,
            note: None,
        };
        let t = inspection_text(&i);
        assert!(t.contains("items:             3\n"), "{t}");
        assert!(t.contains("closed:            yes\n"), "{t}");
        assert!(
            t.contains("producer lock:     held by thread 12 (dead); its holder died holding it"),
            "{t}"
        );
        assert!(
            t.contains("held by thread 10 of process 9 (alive); threads waiting"),
            "{t}"
        );
        let j = inspection_json(&i);
        assert!(j.starts_with("{\"name\":\"jobs\""), "{j}");
        assert!(j.contains("\"items\":3,"), "{j}");
        assert!(j.contains("\"closed\":true"), "{j}");
        assert!(j.contains("\"owner_died\":true"), "{j}");
        assert!(
            j.contains("\"owner_tid\":10,\"owner_pid\":9,\"owner_alive\":true"),
            "{j}"
        );
        assert!(j.ends_with(",\"note\":null}\n"), "{j}");
        assert_eq!(j.matches('{').count(), j.matches('}').count());
    }

    #[test]
    fn watch_lines_show_rates() {
        let mut a = QueueInfo {
            capacity: 4096,
            max_items: 10,
            items: 3,
            used_bytes: 48,
            messages_put: 10,
            messages_got: 7,
            closed: false,
            stream_open: false,
            waiting_producers: 0,
            waiting_consumers: 0,
            partial_reader: None,
            unfinished_tasks: None,
        };
        let first = watch_line(Duration::ZERO, &a, None, Duration::ZERO);
        assert!(first.ends_with("-           -  open"), "{first:?}");
        let prev = a;
        a.messages_put = 30;
        a.messages_got = 12;
        let l = watch_line(
            Duration::from_secs(2),
            &a,
            Some(&prev),
            Duration::from_secs(2),
        );
        assert!(l.contains("10.0") && l.contains("2.5"), "{l}");
        assert_eq!(rate(5, Duration::ZERO), "-");
        assert!(watch_header().contains("PUT/S"));
    }
}
