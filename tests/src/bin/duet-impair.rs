//! `duet-impair`: a seeded userspace UDP shaper between Duet clients and the relay.
//!
//! ```text
//! duet-impair --listen 127.0.0.1:4434 --upstream 127.0.0.1:4433 --profile cellular --seed 7 \
//!     --stats-every 5 --handover-every 30
//! ```
//!
//! Everything but argument parsing and signal handling lives in
//! [`duet_tests::impair::cli`]. Logs go to stderr (`RUST_LOG` filters them), so stdout
//! carries only the `listening` and `stats` lines.

use clap::Parser;
use duet_tests::impair::cli::{run, ImpairArgs};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = ImpairArgs::parse();
    let shutdown = async {
        // If no signal handler can be installed, run until killed rather than stop at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    run(&args, std::io::stdout().lock(), shutdown).await?;
    Ok(())
}
