//! The CPU the engine benchmark reports: each control-plane component's (and Postgres's)
//! seconds of CPU while a scenario runs, from `/proc`, with the machine's busy share and load.

use super::secs;
use previewd_e2e::measure::{cpu_seconds, load_average, machine_jiffies};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The processes whose CPU time is reported, by `/proc/<pid>/comm` (15 characters at most).
const COMPONENTS: &[(&str, &str)] = &[
    ("kube-apiserver", "kube-apiserver"),
    ("etcd", "etcd"),
    ("controller-manager", "kube-controller"),
    ("scheduler", "kube-scheduler"),
    ("kwok", "kwok"),
    ("postgres", "postgres"),
];

pub(super) struct CpuSample {
    at: Instant,
    machine: Option<(f64, f64)>,
    by_pid: HashMap<u32, (usize, f64)>,
    own: Option<f64>,
}

pub(super) struct CpuUse {
    wall: Duration,
    machine_busy: Option<f64>,
    load: String,
    /// CPU seconds per entry of [`COMPONENTS`].
    components: Vec<f64>,
    own: Option<f64>,
}

impl CpuSample {
    pub(super) fn take() -> CpuSample {
        CpuSample {
            at: Instant::now(),
            machine: machine_jiffies(),
            by_pid: component_cpu(),
            own: cpu_seconds(std::process::id()),
        }
    }

    pub(super) fn until_now(self) -> CpuUse {
        let after = CpuSample::take();
        let mut components = vec![0.0; COMPONENTS.len()];
        for (pid, (component, cpu)) in &after.by_pid {
            // Processes present at both samples: a Postgres backend that came and went is not seen.
            if let Some((_, before)) = self.by_pid.get(pid) {
                components[*component] += cpu - before;
            }
        }
        CpuUse {
            wall: after.at.duration_since(self.at),
            machine_busy: self
                .machine
                .zip(after.machine)
                .and_then(|((b0, t0), (b1, t1))| (t1 > t0).then(|| (b1 - b0) / (t1 - t0))),
            load: load_average(),
            components,
            own: self.own.zip(after.own).map(|(a, b)| b - a),
        }
    }
}

/// CPU seconds of every process of [`COMPONENTS`], by pid.
fn component_cpu() -> HashMap<u32, (usize, f64)> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else { continue };
        let Some(component) = COMPONENTS.iter().position(|(_, c)| *c == comm.trim()) else { continue };
        if let Some(cpu) = cpu_seconds(pid) {
            found.insert(pid, (component, cpu));
        }
    }
    found
}

pub(super) fn print_cpu(scenarios: &[(String, CpuUse)]) {
    println!("\nCPU while measuring (seconds of CPU time; the machine has {} cores):", num_cpus());
    let names: Vec<&str> = COMPONENTS.iter().map(|(name, _)| *name).collect();
    println!("| scenario | wall (s) | machine busy | load average after | {} | bench_engine |", names.join(" | "));
    println!("|---|---:|---:|---|{}---:|", "---:|".repeat(names.len()));
    for (label, cpu) in scenarios {
        let components: Vec<String> = cpu.components.iter().map(|c| format!("{c:.1}")).collect();
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            secs(cpu.wall),
            cpu.machine_busy.map_or_else(|| "?".to_owned(), |b| format!("{:.0} %", b * 100.0)),
            cpu.load,
            components.join(" | "),
            cpu.own.map_or_else(|| "?".to_owned(), |c| format!("{c:.1}")),
        );
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
