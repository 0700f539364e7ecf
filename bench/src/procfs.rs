//! What `/proc` says about processes and the machine: memory of the service (`VmRSS`,
//! `VmHWM`), CPU time of each process taking part (load generator, service, ClickHouse), and
//! the whole machine's CPU time, so that a report says who used the cores during a run —
//! including processes that are not part of it.

use std::fs;

use serde::Serialize;

/// Clock ticks per second of `/proc/*/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User plus system CPU time of a process so far, in seconds (all its threads; children
/// that were waited for are not included).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; the fields follow the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// Own CPU time, for the load generator's share.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// The machine's CPU time so far, in seconds summed over all cores: busy and total.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    pub busy: f64,
    pub total: f64,
}

pub fn machine_cpu() -> MachineCpu {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return MachineCpu::default();
    };
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return MachineCpu::default();
    };
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest times are inside user).
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    let ticks = ticks_per_second();
    MachineCpu {
        busy: (total - idle) / ticks,
        total: total / ticks,
    }
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Number of cores online.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A process whose CPU time a run reports.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// CPU used by one process over a window.
#[derive(Debug, Clone, Serialize)]
pub struct CpuShare {
    pub name: String,
    pub pid: u32,
    /// CPU seconds used in the window.
    pub cpu_seconds: f64,
    /// Share of one core over the window, in percent (200 = two cores busy).
    pub percent_of_core: f64,
}

/// CPU times of the watched processes and the machine at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    pub processes: Vec<(String, u32, Option<f64>)>,
    pub machine: MachineCpu,
}

impl CpuSnapshot {
    pub fn take(watched: &[Watched]) -> Self {
        let mut processes: Vec<(String, u32, Option<f64>)> = vec![(
            "eye-bench".to_owned(),
            std::process::id(),
            Some(own_cpu_seconds()),
        )];
        processes.extend(
            watched
                .iter()
                .map(|w| (w.name.clone(), w.pid, cpu_seconds(w.pid))),
        );
        Self {
            processes,
            machine: machine_cpu(),
        }
    }
}

/// How the cores were used between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct CpuSplit {
    pub window_seconds: f64,
    pub cores: usize,
    pub processes: Vec<CpuShare>,
    /// CPU used by every other process on the machine (other engineers' builds, …).
    pub other: CpuShare,
    /// Idle share of the machine, in percent of one core.
    pub idle_percent_of_core: f64,
}

pub fn split(before: &CpuSnapshot, after: &CpuSnapshot, window_seconds: f64) -> CpuSplit {
    let window = window_seconds.max(1e-9);
    let mut processes = Vec::new();
    let mut accounted = 0.0;
    for ((name, pid, start), (_, _, end)) in before.processes.iter().zip(&after.processes) {
        if let (Some(start), Some(end)) = (start, end) {
            let used = (end - start).max(0.0);
            accounted += used;
            processes.push(CpuShare {
                name: name.clone(),
                pid: *pid,
                cpu_seconds: used,
                percent_of_core: used / window * 100.0,
            });
        }
    }
    let machine_busy = (after.machine.busy - before.machine.busy).max(0.0);
    let machine_total = (after.machine.total - before.machine.total).max(0.0);
    let other = (machine_busy - accounted).max(0.0);
    CpuSplit {
        window_seconds,
        cores: cores(),
        processes,
        other: CpuShare {
            name: "other processes".to_owned(),
            pid: 0,
            cpu_seconds: other,
            percent_of_core: other / window * 100.0,
        },
        idle_percent_of_core: (machine_total - machine_busy).max(0.0) / window * 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(status_kb(pid, "VmRSS").unwrap() > 0);
        assert!(status_kb(pid, "VmHWM").unwrap() > 0);
        assert!(cpu_seconds(pid).is_some());
        let machine = machine_cpu();
        assert!(machine.total >= machine.busy && machine.total > 0.0);
    }
}
