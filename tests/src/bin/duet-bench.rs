//! `duet-bench`: the benchmark runner (see [`duet_tests::bench`]).
//!
//! ```text
//! cargo run --release -p duet-tests --bin duet-bench -- forward --pairs 100 --json forward.json
//! cargo run --release -p duet-tests --bin duet-bench -- smoke --json smoke.json
//! cargo run --release -p duet-tests --bin duet-bench -- soak --minutes 10 --json soak.json
//! ```
//!
//! Tables go to stdout, progress to stderr; `--json FILE` writes the figures and
//! `--charts DIR` the SVG charts. The exit code is non-zero only when the runner itself
//! fails, never because a figure missed its target.

use anyhow::Context;
use clap::Parser;
use duet_tests::bench::cli::{common_args, envelope, run, BenchArgs, Scenario};
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    if let Scenario::FloorForwarder {
        listen,
        socket_buffer,
        max_seconds,
    } = &args.scenario
    {
        // The floor is a plain blocking loop on purpose: no runtime to pay for.
        duet_tests::bench::floor::run(*listen, *socket_buffer, Duration::from_secs(*max_seconds))?;
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    let outcome = runtime.block_on(run(&args.scenario))?;
    for table in &outcome.tables {
        println!("{table}");
    }
    let command = std::iter::once("duet-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let common = common_args(&args.scenario);
    if let Some(path) = common.and_then(|c| c.json.as_ref()) {
        let json = envelope(outcome.json, &command);
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("duet-bench: figures written to {}", path.display());
    }
    if let Some(dir) = common.and_then(|c| c.charts.as_ref()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, svg) in &outcome.charts {
            let path = dir.join(name);
            std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("duet-bench: chart written to {}", path.display());
        }
    }
    // Dropping the runtime can wait on blocking tasks; nothing else needs to finish.
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
