//! The classic worker demo: several child processes each report who they
//! are; the parent joins them and prints their results.
//!
//! ```text
//! cargo run --release --example spawn_join
//! ```

use ipckit::process::{self, Process};

/// Runs in a child process.
fn worker(task: u32) -> String {
    let me = process::current_process();
    let parent = process::parent_process().expect("a child has a parent");
    format!(
        "task {task}: done by {} (pid {}), child of {} (pid {}); {task}² = {}",
        me.name(),
        me.pid(),
        parent.name(),
        parent.pid(),
        task * task
    )
}

fn main() -> ipckit::Result<()> {
    ipckit::init(); // in a child: runs `worker` and exits

    let me = process::current_process();
    println!(
        "{} (pid {}) starts 4 workers on {} CPUs",
        me.name(),
        me.pid(),
        process::cpu_count()
    );
    let workers = (1..=4)
        .map(|task| {
            Process::builder()
                .name(format!("worker-{task}"))
                .spawn(worker, task)
        })
        .collect::<ipckit::Result<Vec<_>>>()?;
    for w in &workers {
        println!("started {} as pid {}", w.name(), w.pid());
    }
    for w in workers {
        println!("{}", w.join()?);
    }
    println!(
        "active children after joining: {}",
        process::active_children().len()
    );
    Ok(())
}
