//! What the benchmarks measure besides their own clocks: percentiles, and the CPU used by a
//! process and by the whole machine (Linux `/proc`), so each figure comes with how busy the
//! machine was.

use std::process::Command;
use std::time::Duration;

/// Nearest rank over `sorted`: the smallest value with at least the fraction `p` (0.5 for the
/// median) of the values at or below it; the default (zero) for no values. Generic so that a
/// benchmark may keep compact samples (microseconds as `u32`) and convert once.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// User + system CPU seconds of process `pid`, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Busy and total jiffies of the whole machine, from `/proc/stat`.
pub fn machine_jiffies() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: f64 = values.iter().take(8).sum();
    // idle + iowait
    let idle = values.get(3)? + values.get(4).unwrap_or(&0.0);
    Some((total - idle, total))
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// One kind of request, measured.
pub struct Phase {
    pub label: String,
    /// Sorted.
    pub times: Vec<Duration>,
    /// Answer bytes, on average.
    pub bytes: usize,
    /// The server's CPU seconds per request.
    pub server_cpu: Option<f64>,
    /// The machine's busy fraction meanwhile.
    pub machine_busy: Option<f64>,
}

/// Times requests while sampling previewd's CPU and the machine's.
pub struct Clock {
    pid: Option<u32>,
    cpu: Option<f64>,
    machine: Option<(f64, f64)>,
    times: Vec<Duration>,
    bytes: usize,
}

impl Clock {
    pub fn start(pid: Option<u32>) -> Clock {
        Clock { pid, cpu: pid.and_then(cpu_seconds), machine: machine_jiffies(), times: Vec::new(), bytes: 0 }
    }

    pub fn record(&mut self, took: Duration, body: &[u8]) {
        self.record_size(took, body.len());
    }

    /// A request of `bytes` answer bytes that took `took`.
    pub fn record_size(&mut self, took: Duration, bytes: usize) {
        self.times.push(took);
        self.bytes += bytes;
    }

    /// Requests recorded so far.
    pub fn count(&self) -> usize {
        self.times.len()
    }

    pub fn stop(mut self, label: impl Into<String>) -> Phase {
        let cpu = self.pid.and_then(cpu_seconds);
        let machine = machine_jiffies();
        self.times.sort_unstable();
        let n = self.times.len().max(1);
        Phase {
            label: label.into(),
            bytes: self.bytes / n,
            server_cpu: self.cpu.zip(cpu).map(|(a, b)| (b - a) / n as f64),
            machine_busy: self
                .machine
                .zip(machine)
                .and_then(|((b0, t0), (b1, t1))| (t1 > t0).then(|| (b1 - b0) / (t1 - t0))),
            times: self.times,
        }
    }
}

/// `phases` as a Markdown table of milliseconds.
pub fn print_table(phases: &[Phase]) {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    println!("| request | n | p50 | p99 | max | answer | previewd CPU / request | machine busy |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for phase in phases {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} KiB | {} | {} |",
            phase.label,
            phase.times.len(),
            ms(percentile(&phase.times, 0.50)),
            ms(percentile(&phase.times, 0.99)),
            ms(phase.times.last().copied().unwrap_or_default()),
            phase.bytes as f64 / 1024.0,
            phase.server_cpu.map_or_else(|| "?".to_owned(), |c| format!("{:.2} ms", c * 1000.0)),
            phase.machine_busy.map_or_else(|| "?".to_owned(), |b| format!("{:.0} %", b * 100.0)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&values[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile::<Duration>(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&[10_u32, 20, 30], 0.5), 20);
    }
}
