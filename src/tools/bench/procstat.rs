//! What a process has used, from its own accounting in `/proc`: CPU time
//! (user + system, all threads) and resident memory. Linux only; elsewhere
//! every reading is an error and the bench says so.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// CPU time a process has used, read at a moment.
#[derive(Debug, Clone)]
pub struct CpuReading {
    /// All threads, those that have ended included, in clock ticks (10 ms
    /// on most systems): exact over a long run, coarse over a short one.
    pub cpu: Duration,
    /// Per live thread, nanoseconds on a CPU (`/proc/<pid>/task/*/schedstat`):
    /// precise, but blind to threads that end between two readings.
    pub threads: std::collections::BTreeMap<u32, u64>,
    pub at: Instant,
}

/// Reads `/proc/<pid>/stat`: utime and stime, in clock ticks.
pub fn cpu(pid: u32) -> anyhow::Result<CpuReading> {
    let at = Instant::now();
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: the fields
    // that follow start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc stat line")?
            .parse::<u64>()
            .context("/proc stat field")
    };
    let ticks = tick(11)? + tick(12)?;
    Ok(CpuReading {
        cpu: ticks_to_duration(ticks),
        threads: thread_times(pid),
        at,
    })
}

/// Nanoseconds on a CPU of each live thread of `pid`; a thread that ends
/// while it is read is left out.
fn thread_times(pid: u32) -> std::collections::BTreeMap<u32, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text.split_whitespace().next().and_then(|n| n.parse().ok()) {
            out.insert(tid, ns);
        }
    }
    out
}

#[cfg(unix)]
fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second)
}

#[cfg(not(unix))]
fn ticks_to_duration(_ticks: u64) -> Duration {
    Duration::ZERO
}

/// Resident memory, from `VmRSS` in `/proc/<pid>/status`, in bytes.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kib: u64 = v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .context("VmRSS value")?;
            return Ok(kib * 1024);
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// CPU used between two readings of the same process.
pub fn used(before: &CpuReading, after: &CpuReading) -> Duration {
    after.cpu.saturating_sub(before.cpu)
}

/// The share of one core used between two readings, in percent, from the
/// threads' nanosecond accounting: what a short idle window needs, where a
/// single clock tick is already 0.1 % of a core over ten seconds. A thread
/// that ended in between is not counted; one that started counts whole.
pub fn precise_percent_of_core(before: &CpuReading, after: &CpuReading) -> f64 {
    let wall = after.at.saturating_duration_since(before.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    let ns: u64 = after
        .threads
        .iter()
        .map(|(tid, a)| a.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
        .sum();
    100.0 * (ns as f64 / 1e9) / wall
}
