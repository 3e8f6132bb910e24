//! The agent's (and Rotel's) CPU time and RSS, read from `/proc`; free ports.

use super::*;

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Nanoseconds each thread of a process has run, from `/proc/PID/task/*/schedstat`: the
/// scheduler's exact run time. `/proc/PID/stat` counts 10 ms ticks by sampling, which at a
/// few percent of a core over 15 s is only good to about ±10 %.
#[derive(Default)]
pub(crate) struct CpuSnapshot(pub(crate) std::collections::HashMap<u32, u64>);

impl CpuSnapshot {
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let mut threads = std::collections::HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread that exited since the listing has no file any more.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            let ns = stat.split_whitespace().next().context("empty schedstat")?;
            threads.insert(tid, ns.parse()?);
        }
        Ok(CpuSnapshot(threads))
    }

    /// CPU seconds since `earlier`, over the threads alive now. A thread that exited in
    /// between is missed: the agent's runtime threads live as long as it does, and under load
    /// its blocking-pool thread (spool writes every second, host samples) is kept alive too;
    /// an idle agent's blocking threads exit after 10 s, so idle CPU is measured from
    /// `/proc/PID/stat` instead (see the README).
    pub(crate) fn since(&self, earlier: &CpuSnapshot) -> f64 {
        let ns: u64 = self
            .0
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

/// CPU seconds a process has used, summed over its live threads (see [`CpuSnapshot`]).
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<CpuSnapshot> {
    CpuSnapshot::of(pid)
}

/// (user, system) CPU seconds of a process, from /proc (tick-sampled: for the split only).
pub(crate) fn cpu_split(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|x| x.1)
        .context("bad /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = f.get(11).context("utime")?.parse()?;
    let system: f64 = f.get(12).context("stime")?.parse()?;
    Ok((user / 100.0, system / 100.0)) // USER_HZ is 100 on Linux
}

/// (current RSS, peak RSS) in MiB.
pub(crate) fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (get("VmRSS:"), get("VmHWM:"))
}
