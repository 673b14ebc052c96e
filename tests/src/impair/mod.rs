//! `duet-impair`: a seeded userspace UDP shaper that puts a bad network between Duet's
//! clients and its QUIC relay, with no privileges and nothing touching the host's network.
//!
//! Clients talk to the shaper's listen address; it forwards to the relay through one
//! socket per client (like a NAT) and shapes each direction on its own: blackouts, random
//! and bursty loss, duplication, a rate limit with a bounded queue, delay with jitter, and
//! reordering. The same seed gives the same decisions for the same packet sequence, so a
//! failing test can be replayed.
//!
//! The crate is split the way `quinn-proto` and `quinn` are:
//!
//! * [`profile`]: what a network does, as plain data, with the named profiles
//!   (`lan`, `wifi`, `cellular`, `lossy`, `congested`, `handover`, `cellular-walk`,
//!   `train`) and scripted timelines;
//! * [`capacity`]: time-varying link rates (seeded random walks, mahimahi trace files);
//! * [`model`] and [`link`]: the decisions, with no I/O and the time passed in, so every
//!   impairment is tested packet by packet and deterministically;
//! * [`shaper`]: the thin tokio layer (sockets, flows, timers) and its control handle;
//! * [`cli`]: the `duet-impair` binary's arguments and main loop.
//!
//! ```no_run
//! # async fn example() -> Result<(), duet_tests::impair::ShaperError> {
//! use std::time::Duration;
//! use duet_tests::impair::{Profile, Shaper, ShaperConfig};
//!
//! let relay = "127.0.0.1:4433".parse().expect("a literal address");
//! let profile = Profile::rtt(Duration::from_millis(80)).with_loss(0.01);
//! let config = ShaperConfig::new("127.0.0.1:0".parse().expect("a literal address"), relay, profile).with_seed(7);
//! let shaper = Shaper::start(config).await?;
//! // Point the client at `shaper.local_addr()`; later:
//! shaper.rebind()?;
//! println!("{:?}", shaper.stats());
//! # Ok(()) }
//! ```

pub mod capacity;
pub mod cli;
pub mod link;
pub mod model;
pub mod profile;
pub mod shaper;
pub mod stats;

pub use capacity::{CapacityTrace, TraceError, Walk};
pub use link::{
    Blackout, Fate, Link, Verdict, MAX_QUEUED_BYTES, MAX_QUEUED_PACKETS, WIRE_OVERHEAD_BYTES,
};
pub use profile::{
    AddressChange, GilbertElliott, Profile, RateLimit, Reorder, Step, TimedStep, Timeline,
    UnknownProfile, HANDOVER_AT, HANDOVER_BLACKOUT, PROFILE_NAMES,
};
pub use shaper::{
    Direction, Shaper, ShaperConfig, ShaperError, ShaperHandle, FLOW_IDLE_TIMEOUT, MAX_FLOWS,
};
pub use stats::{DirectionStats, DropCounts, DropReason, ShaperStats};

#[cfg(test)]
mod tests;
