//! `duet-bench`: the benchmark runner. It starts its own relay (the real release binary,
//! as a separate process), drives it with native clients on loopback, reads what the
//! relay process cost from `/proc`, prints a table and writes the figures as JSON (and,
//! on request, SVG charts for `BENCHMARKS.md`).
//!
//! Scenarios (see each module): [`matching`] (`match`), [`forward`] (`forward`, `floor`,
//! `impaired`), [`sessions`], [`handover`], [`resume`], [`soak`], and `smoke`, which runs
//! each of them at a tiny size so CI keeps the runner working without asserting anything
//! about speed.
//!
//! Map:
//! * [`load`]: the load generator (shared endpoints, one paced sender, frame tracking);
//! * [`process`]: the relay and floor processes; [`floor`]: the plain UDP forwarder;
//! * [`procfs`]: CPU and memory from the OS; [`stats`]: histograms and percentiles;
//! * [`report`], [`chart`]: tables, target checks and SVG; [`cli`]: arguments and output.
//!
//! Benchmarks are programs that print figures, not tests: nothing here fails on a slow
//! result. Every loop is bounded in count and time, and every child process is killed
//! when its handle drops.

pub mod adaptation;
pub mod chart;
pub mod cli;
pub mod floor;
pub mod forward;
pub mod handover;
pub mod load;
pub mod matching;
pub mod process;
pub mod procfs;
pub mod report;
pub mod resume;
pub mod sessions;
pub mod soak;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Process(String),
    #[error("setup: {0}")]
    Setup(String),
    #[error("client: {0}")]
    Client(#[from] duet_client::ClientError),
    #[error("shaper: {0}")]
    Shaper(#[from] crate::impair::ShaperError),
    #[error("smoke check failed: {0}")]
    Smoke(String),
}

/// Settings every scenario shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub relay_bin: PathBuf,
    /// UDP socket buffers, asked for on the relay, the floor and every client endpoint.
    pub socket_buffer: usize,
    pub sessions_per_endpoint: usize,
    pub idle_timeout_ms: u64,
    pub seed: u64,
    /// Flags passed to the relay unchanged.
    pub relay_args: Vec<String>,
}

impl Common {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(300))
    }

    pub fn relay_options(&self, max_sessions: usize) -> process::RelayOptions {
        process::RelayOptions {
            bin: self.relay_bin.clone(),
            socket_buffer: self.socket_buffer,
            max_sessions: max_sessions.max(64),
            idle_timeout_ms: self.idle_timeout_ms,
            extra_args: self.relay_args.clone(),
        }
    }
}
