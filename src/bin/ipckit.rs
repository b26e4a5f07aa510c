//! `ipckit`: list, inspect, watch and clean up ipckit objects in /dev/shm.
//!
//! Exit status: 0 on success, 1 on an error (message on stderr), 2 on a
//! usage error. The work is done by `ipckit::admin`; this file only parses
//! arguments and prints.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ipckit::admin::{self, text};

/// List, inspect, watch and clean up ipckit shared-memory objects.
///
/// Objects are the entries of /dev/shm that start with an ipckit header. An
/// object is stale when its creator is dead (pid and start time) and no live
/// process maps it or holds it open. Other users' processes are invisible
/// without privileges: run as the user that runs the programs, or as root.
#[derive(Parser, Debug)]
#[command(name = "ipckit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List ipckit objects: name, kind, size, creator, users, age, status.
    Ls {
        /// Also list entries without an ipckit header (other programs'
        /// files, Python SharedMemory, raw ipckit segments).
        #[arg(long)]
        all: bool,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show an object's header and, for a queue, its usage, counters,
    /// waiters and lock owners.
    Inspect {
        /// The object's name (as in /dev/shm).
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Refresh a queue's depth, bytes and put/get rates.
    Watch {
        /// The queue's name.
        name: String,
        /// Milliseconds between refreshes.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Remove objects. Refuses an object in use, one whose creator still
    /// runs, and files without an ipckit header, unless --force.
    Rm {
        /// The names to remove.
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove the names regardless (processes using them keep their mapping).
        #[arg(long)]
        force: bool,
    },
    /// Remove stale objects: creator dead and no live process using them.
    Clean {
        /// Remove stale objects (required: the only kind of cleaning there is).
        #[arg(long, required = true)]
        stale: bool,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only objects whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors to
            // stderr with status 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        // The failures were already reported.
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ipckit: {e}");
            ExitCode::from(1)
        }
    }
}

fn out(s: &str) -> ipckit::Result<()> {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`ipckit ls | head`) is not worth an error message.
    let _ = stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush());
    Ok(())
}

/// Runs a command; `Ok(false)` when it failed and already said why.
fn run(command: Command) -> ipckit::Result<bool> {
    match command {
        Command::Ls { all, json } => {
            let objects = admin::list(all)?;
            if json {
                out(&text::objects_json(&objects))?;
            } else {
                out(&text::table(&objects))?;
            }
            Ok(true)
        }
        Command::Inspect { name, json } => {
            let i = admin::inspect(&name)?;
            if json {
                out(&text::inspection_json(&i))?;
            } else {
                out(&text::inspection_text(&i))?;
            }
            Ok(true)
        }
        Command::Watch {
            name,
            interval,
            count,
        } => watch(&name, Duration::from_millis(interval), count).map(|()| true),
        Command::Rm { names, force } => {
            let mut ok = true;
            for name in &names {
                match admin::remove(name, force) {
                    Ok(o) => out(&format!("removed {} ({})\n", o.name, o.kind_name()))?,
                    Err(e) => {
                        // Report each failure and go on with the other names.
                        let _ = writeln!(std::io::stderr(), "ipckit: {e}");
                        ok = false;
                    }
                }
            }
            Ok(ok)
        }
        Command::Clean {
            stale: _,
            dry_run,
            prefix,
        } => {
            let found = admin::clean_stale_with_prefix(&prefix, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            let mut s = String::new();
            for o in &found {
                let creator = o.creator.map_or(0, |c| c.pid);
                let age = o.age.map_or_else(|| "?".to_owned(), text::age);
                s.push_str(&format!(
                    "{verb} {} ({}, {}, creator {creator} dead, age {age})\n",
                    o.name.escape_debug(),
                    o.kind_name(),
                    text::size(o.size)
                ));
            }
            s.push_str(&format!(
                "{} stale object{} {}\n",
                found.len(),
                if found.len() == 1 { "" } else { "s" },
                if dry_run { "found" } else { "removed" }
            ));
            out(&s)?;
            Ok(true)
        }
    }
}

fn watch(name: &str, interval: Duration, count: Option<u64>) -> ipckit::Result<()> {
    match admin::queue_info(name) {
        Err(e) if e.kind() == ipckit::ErrorKind::WrongKind => watch_object(name, interval, count),
        _ => watch_queue(name, interval, count),
    }
}

/// `watch` on a `Mutex`, `Value` or `Array`: its lock and contents.
fn watch_object(name: &str, interval: Duration, count: Option<u64>) -> ipckit::Result<()> {
    let start = Instant::now();
    let first = admin::inspect(name)?;
    if first.locks.is_empty() && first.contents.is_none() {
        return Err(ipckit::Error::new(
            ipckit::ErrorKind::WrongKind,
            format!(
                "cannot watch {name:?}: it is a {}; ipckit watches queues, mutexes, values, \
                 arrays and published pools",
                first.info.kind_name()
            ),
        ));
    }
    out(&format!(
        "watching {} {name:?}\n{}\n",
        first.info.kind_name(),
        text::watch_object_header()
    ))?;
    let mut n = 0u64;
    let mut insp = first;
    loop {
        out(&format!(
            "{}\n",
            text::watch_object_line(start.elapsed(), &insp)
        ))?;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
        insp = admin::inspect(name)?;
    }
}

fn watch_queue(name: &str, interval: Duration, count: Option<u64>) -> ipckit::Result<()> {
    let start = Instant::now();
    let mut prev: Option<(admin::QueueInfo, Instant)> = None;
    out(&format!(
        "watching queue {name:?}\n{}\n",
        text::watch_header()
    ))?;
    let mut n = 0u64;
    loop {
        let now = admin::queue_info(name)?;
        let t = Instant::now();
        let line = match &prev {
            Some((p, pt)) => text::watch_line(t - start, &now, Some(p), t - *pt),
            None => text::watch_line(t - start, &now, None, Duration::ZERO),
        };
        out(&format!("{line}\n"))?;
        prev = Some((now, t));
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
