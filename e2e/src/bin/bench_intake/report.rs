//! What the intake benchmark prints: each target's figures as it finishes, then the table of
//! all of them and previewd's ratio to the `@octokit/webhooks` receiver.

use super::Target;
use std::time::Duration;

/// Figures of one target.
pub(super) struct Figures {
    pub(super) target: Target,
    pub(super) per_second: f64,
    pub(super) p50: Duration,
    pub(super) p99: Duration,
    pub(super) measured: usize,
    pub(super) errors: usize,
    /// Every accepted delivery of the run, warm-up included.
    pub(super) accepted: usize,
    /// What the target says it kept: stored deliveries (previewd) or handled ones (octokit).
    pub(super) kept: i64,
    /// Jobs stored, and of those finished by previewd's workers when the load stopped.
    pub(super) jobs: Option<(i64, i64)>,
    pub(super) server_cpu: Option<f64>,
    pub(super) client_cpu: Option<f64>,
    pub(super) machine_busy: Option<f64>,
    pub(super) load: String,
}

pub(super) fn millis(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn cores(value: Option<f64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| format!("{v:.2}"))
}

pub(super) fn print_figures(f: &Figures) {
    println!(
        "    {:.0} deliveries/s, p50 {} ms, p99 {} ms, {} measured, {} errors",
        f.per_second,
        millis(f.p50),
        millis(f.p99),
        f.measured,
        f.errors
    );
    match f.jobs {
        Some((jobs, done)) => println!(
            "    stored: {} deliveries for {} answered 202 (warm-up included); {jobs} jobs, {done} already done by the workers",
            f.kept, f.accepted
        ),
        None => println!("    handled by the receiver: {} deliveries for {} answered 200", f.kept, f.accepted),
    }
    println!(
        "    CPU during the measured window: server {} cores, load generator {} cores, whole machine {}% busy; load average {}",
        cores(f.server_cpu),
        cores(f.client_cpu),
        f.machine_busy.map_or_else(|| "?".to_owned(), |b| format!("{:.0}", b * 100.0)),
        f.load
    );
}

pub(super) fn print_table(results: &[Figures]) {
    println!("\n| target | deliveries/s | p50 ms | p99 ms | errors | kept / accepted |");
    println!("|---|---:|---:|---:|---:|---:|");
    for f in results {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} / {} |",
            f.target.label(),
            f.per_second,
            millis(f.p50),
            millis(f.p99),
            f.errors,
            f.kept,
            f.accepted
        );
    }
    if let Some(octokit) = results.iter().find(|f| f.target == Target::Octokit && f.per_second > 0.0) {
        for f in results.iter().filter(|f| f.target != Target::Octokit) {
            println!(
                "\nratio {} / {}: {:.2}x deliveries/s, p99 {:.2}x",
                f.target.label(),
                octokit.target.label(),
                f.per_second / octokit.per_second,
                f.p99.as_secs_f64() / octokit.p99.as_secs_f64().max(f64::EPSILON)
            );
        }
    }
}
