//! The benchmarks' command lines: `--flag value` pairs after the program's name.

use crate::database::Backend;
use anyhow::Context;
use std::str::FromStr;

/// The `--flag value` pairs of this process's command line, in order. `--help` (or `-h`)
/// prints `usage` and exits; a flag without a value is an error that shows `usage`.
pub fn flags(usage: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{usage}");
            std::process::exit(0);
        }
        let value = args.next().with_context(|| format!("{flag} needs a value\n{usage}"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// The value of `flag`, as a number.
pub fn number<T: FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value.parse().ok().with_context(|| format!("{flag}: `{value}` is not a number"))
}

/// The stores `--store` names: `sqlite`, `postgres` or `both`.
pub fn stores(value: &str) -> anyhow::Result<Vec<Backend>> {
    Ok(match value {
        "sqlite" => vec![Backend::Sqlite],
        "postgres" => vec![Backend::Postgres],
        "both" => vec![Backend::Sqlite, Backend::Postgres],
        other => anyhow::bail!("--store {other}: sqlite, postgres or both"),
    })
}
