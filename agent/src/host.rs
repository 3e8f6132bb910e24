//! Host metrics every `host.interval_s` seconds via `sysinfo`: CPU, memory, load, disks,
//! network rates, process count, and the watched app process (by pid file or name).
//!
//! Sampling runs on a blocking thread (sysinfo reads /proc synchronously) and sends each
//! [`HostSample`] to the pipeline, which ships it with the next batch.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stormwatch_model::{DiskUsage, HostSample};
use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System, ThreadKind};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::util::now_ns;

/// Reads pid files and process tables; keeps the previous network counters for rates.
pub struct HostSampler {
    sys: System,
    disks: Disks,
    networks: Networks,
    last: Instant,
    host: String,
}

impl HostSampler {
    pub fn new(host: String) -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_usage();
        HostSampler {
            sys,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            last: Instant::now(),
            host,
        }
    }

    /// One sample; `app` is the (pid file, name) of the process to watch.
    pub fn sample(&mut self, pid_file: Option<&Path>, name: Option<&str>) -> HostSample {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        // Every process's pid and name, nothing more: enough to count them and to find the app
        // by name. `refresh_processes` also read each one's memory, CPU, I/O and threads (most
        // of a sample's cost) and listed every thread as a process of its own.
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().without_tasks(),
        );
        self.disks.refresh(true);
        self.networks.refresh(true);
        let secs = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = Instant::now();
        let (rx, tx) = self
            .networks
            .iter()
            .filter(|(n, _)| n.as_str() != "lo")
            .fold((0u64, 0u64), |(r, t), (_, d)| {
                (r + d.received(), t + d.transmitted())
            });
        let load = System::load_average();
        let finite = |v: f64| if v.is_finite() && v >= 0.0 { v } else { 0.0 };
        let mut s = HostSample {
            time_ns: now_ns(),
            host: self.host.clone(),
            cpu_percent: finite(f64::from(self.sys.global_cpu_usage())),
            mem_used_bytes: self.sys.used_memory(),
            mem_total_bytes: self.sys.total_memory(),
            load1: finite(load.one),
            load5: finite(load.five),
            load15: finite(load.fifteen),
            net_rx_bytes_per_s: (rx as f64 / secs) as u64,
            net_tx_bytes_per_s: (tx as f64 / secs) as u64,
            process_count: self
                .sys
                .processes()
                .values()
                // As `top` counts tasks: kernel threads are listed in /proc, an app's threads are not.
                .filter(|p| p.thread_kind() != Some(ThreadKind::Userland))
                .count() as u32,
            disks: self
                .disks
                .iter()
                .take(256)
                .map(|d| DiskUsage {
                    mount: d.mount_point().to_string_lossy().into_owned(),
                    used_bytes: d.total_space().saturating_sub(d.available_space()),
                    total_bytes: d.total_space(),
                })
                .collect(),
            app_cpu_percent: None,
            app_rss_bytes: None,
            app_threads: None,
        };
        let pid = pid_file
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse::<usize>().ok())
            .map(Pid::from)
            .or_else(|| {
                let name = name?;
                self.sys
                    .processes()
                    .iter()
                    .find(|(_, p)| p.name().to_string_lossy() == name)
                    .map(|(pid, _)| *pid)
            });
        if let Some(pid) = pid {
            self.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing()
                    .with_cpu()
                    .with_memory()
                    .with_tasks(),
            );
        }
        if let Some(p) = pid.and_then(|pid| self.sys.process(pid)) {
            s.app_cpu_percent = Some(finite(f64::from(p.cpu_usage())));
            s.app_rss_bytes = Some(p.memory());
            s.app_threads = Some(p.tasks().map_or(1, |t| t.len().max(1)) as u32);
        }
        s
    }
}

/// Samples until `stop`; a zero interval disables sampling (re-checked on reload).
pub async fn run(
    host: String,
    config: watch::Receiver<Arc<Config>>,
    tx: mpsc::Sender<HostSample>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sampler = tokio::task::spawn_blocking(move || HostSampler::new(host))
        .await
        .ok();
    loop {
        let interval = config.borrow().host.interval_s;
        let wait = Duration::from_secs(if interval == 0 { 5 } else { interval });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if interval == 0 {
            continue;
        }
        let Some(mut s) = sampler.take() else { return };
        let cfg = config.borrow().clone();
        let job = tokio::task::spawn_blocking(move || {
            let sample = s.sample(
                cfg.host.app_pid_file.as_deref(),
                cfg.host.app_process_name.as_deref(),
            );
            (s, sample)
        });
        // A sample can block (statvfs on a hung network mount, a pid file on a stuck file
        // system): shutdown does not wait for it.
        let joined = tokio::select! {
            j = job => j,
            _ = stop.changed() => return,
        };
        let Ok((s, sample)) = joined else { return };
        sampler = Some(s);
        // A full channel means the pipeline is stuck; a missed host sample is not worth waiting.
        let _ = tx.try_send(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes in `/proc` (threads are not listed there).
    fn proc_processes() -> u32 {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            })
            .count() as u32
    }

    #[test]
    fn counts_processes_not_threads_and_finds_the_app_by_name() {
        // Twenty more threads in this process must not count as twenty processes.
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let rx = stop_rx.clone();
                std::thread::spawn(move || {
                    let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
                })
            })
            .collect();
        let mut h = HostSampler::new("test-host".into());
        let before = proc_processes();
        let mut own = System::new();
        let me = Pid::from_u32(std::process::id());
        own.refresh_processes(ProcessesToUpdate::Some(&[me]), true);
        let name = own
            .process(me)
            .unwrap()
            .name()
            .to_string_lossy()
            .into_owned();
        let s = h.sample(None, Some(&name));
        let after = proc_processes();
        // Other tests' processes come and go meanwhile: a little slack, far below 20.
        assert!(
            s.process_count + 5 >= before.min(after) && s.process_count <= before.max(after) + 5,
            "{} processes counted, /proc lists {before}..{after}",
            s.process_count
        );
        assert!(s.app_rss_bytes.unwrap_or(0) > 0, "{s:?}");
        assert!(s.app_threads.unwrap_or(0) > 20, "{s:?}");
        drop(stop_tx);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn samples_this_process_by_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("app.pid");
        std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
        let mut h = HostSampler::new("test-host".into());
        let s = h.sample(Some(&pid_file), None);
        assert_eq!(s.host, "test-host");
        assert!(s.mem_total_bytes > 0 && s.process_count > 0);
        assert!(s.app_rss_bytes.unwrap_or(0) > 0, "{s:?}");
        assert!(s.app_threads.unwrap_or(0) >= 1);
        let mut b = stormwatch_model::Batch {
            version: stormwatch_model::WIRE_VERSION,
            agent_id: "a".into(),
            instance: "i".into(),
            hosts: vec![s],
            ..Default::default()
        };
        stormwatch_model::validate::check_batch(&mut b, now_ns()).unwrap();
    }
}
