//! The `duet-impair` command line: its arguments and its main loop, kept in the library so
//! the binary is a few lines and the loop is tested without a process.
//!
//! Output is line-based so scripts can follow it: one `listening …` line once the socket
//! is bound, then (with `--stats-every`) one `stats {json}` line per period and a last one
//! at exit, the JSON being a [`ShaperStats`].

use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::time::{Instant, MissedTickBehavior};

use super::profile::{AddressChange, Profile, UnknownProfile};
use super::shaper::{Shaper, ShaperConfig, ShaperError};
use super::stats::ShaperStats;

/// Longest period `--stats-every` and `--handover-every` accept: a day. Longer is a typo,
/// and the bound keeps every timer deadline representable.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// A seeded userspace UDP shaper between Duet clients and the relay.
#[derive(Debug, Clone, Parser)]
#[command(name = "duet-impair", version)]
pub struct ImpairArgs {
    /// Address clients send to (port 0 picks one; the `listening` line tells which).
    #[arg(long, env = "DUET_IMPAIR_LISTEN", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The relay's QUIC address.
    #[arg(long, env = "DUET_IMPAIR_UPSTREAM", value_name = "ADDR")]
    pub upstream: SocketAddr,
    /// Network profile for both directions: lan, wifi, cellular, lossy, congested,
    /// handover, loss1-rtt80, cellular-walk (a rate that swings between 0.3 and 10 Mbit/s)
    /// or train (the same with long fades and an address change every 20–60 s).
    #[arg(long, env = "DUET_IMPAIR_PROFILE", default_value = "lan", value_parser = parse_profile_name)]
    pub profile: String,
    /// Seed of every random decision: the same seed replays the same drops.
    #[arg(long, env = "DUET_IMPAIR_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Print a `stats` line this often (seconds, fractions allowed).
    #[arg(long, value_name = "SECONDS", value_parser = parse_period)]
    pub stats_every: Option<Duration>,
    /// Hand over between Wi-Fi and cellular this often (seconds), replacing the profile's
    /// own timeline: each handover is a blackout, a rebinding and the other profile.
    #[arg(long, value_name = "SECONDS", value_parser = parse_period)]
    pub handover_every: Option<Duration>,
    /// What each `--handover-every` handover changes: `port` (a new source port, as a NAT
    /// rebinding) or `ip` (a new source address, 127.0.0.2 and on: another network).
    #[arg(long, default_value = "port", requires = "handover_every")]
    pub change: AddressChange,
}

impl ImpairArgs {
    /// The shaper configuration these arguments describe.
    pub fn config(&self) -> Result<ShaperConfig, UnknownProfile> {
        let mut profile = Profile::named(&self.profile)?;
        if let Some(every) = self.handover_every {
            profile = profile.with_periodic_handover(every);
            profile.timeline = profile.timeline.with_change(self.change);
        }
        Ok(ShaperConfig::new(self.listen, self.upstream, profile).with_seed(self.seed))
    }
}

fn parse_profile_name(name: &str) -> Result<String, UnknownProfile> {
    Profile::named(name).map(|_| name.to_owned())
}

fn parse_period(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    match Duration::try_from_secs_f64(seconds) {
        Ok(period) if !period.is_zero() && period <= MAX_PERIOD => Ok(period),
        _ => Err(format!(
            "{text:?} must be more than 0 and at most {} seconds",
            MAX_PERIOD.as_secs()
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Profile(#[from] UnknownProfile),
    #[error(transparent)]
    Shaper(#[from] ShaperError),
    #[error("cannot write the output")]
    Output(#[from] io::Error),
}

/// Runs the shaper until `shutdown` completes, writing the `listening` line and the stats
/// lines to `out`.
pub async fn run(
    args: &ImpairArgs,
    mut out: impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let shaper = Shaper::start(args.config()?).await?;
    let handovers = match args.handover_every {
        Some(every) => format!(
            " handover-every {}s change {}",
            every.as_secs_f64(),
            args.change
        ),
        None => String::new(),
    };
    writeln!(
        out,
        "listening {} upstream {} profile {} seed {}{handovers}",
        shaper.local_addr(),
        shaper.upstream(),
        args.profile,
        args.seed
    )?;
    out.flush()?;

    tokio::pin!(shutdown);
    if let Some(every) = args.stats_every {
        let first = Instant::now()
            .checked_add(every)
            .unwrap_or_else(Instant::now);
        let mut ticks = tokio::time::interval_at(first, every);
        // A stalled terminal should not be answered with a burst of stale lines.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticks.tick() => write_stats(&mut out, &shaper.stats())?,
            }
        }
        write_stats(&mut out, &shaper.stats())?;
    } else {
        shutdown.await;
    }
    shaper.shutdown().await;
    Ok(())
}

/// One `stats {json}` line.
pub fn write_stats(out: &mut impl Write, stats: &ShaperStats) -> io::Result<()> {
    out.write_all(b"stats ")?;
    serde_json::to_writer(&mut *out, stats).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impair::profile::Step;

    fn parse(args: &[&str]) -> Result<ImpairArgs, clap::Error> {
        ImpairArgs::try_parse_from(["duet-impair"].iter().chain(args))
    }

    #[test]
    fn arguments_parse_into_a_config() -> anyhow::Result<()> {
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:4433",
            "--profile",
            "cellular",
            "--seed",
            "7",
            "--stats-every",
            "0.5",
            "--handover-every",
            "30",
        ])?;
        assert_eq!(args.upstream, "127.0.0.1:4433".parse()?);
        assert_eq!(args.stats_every, Some(Duration::from_millis(500)));
        let config = args.config()?;
        assert_eq!(config.seed, 7);
        assert_eq!(config.up.delay, Profile::cellular().delay);
        assert_eq!(
            config.up.timeline.repeat_every,
            Some(Duration::from_secs(60))
        );
        assert!(
            matches!(&config.up.timeline.steps[0].step, Step::Handover { to, change: AddressChange::Port, .. } if **to == Profile::wifi())
        );
        let ip = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:4433",
            "--handover-every",
            "5",
            "--change",
            "ip",
        ])?;
        let steps = ip.config()?.up.timeline.steps;
        assert!(steps.iter().all(|s| matches!(
            s.step,
            Step::Handover {
                change: AddressChange::Ip,
                ..
            }
        )));
        assert!(
            parse(&[
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:4433",
                "--change",
                "ip"
            ])
            .is_err(),
            "--change needs --handover-every"
        );
        Ok(())
    }

    #[test]
    fn defaults_are_lan_and_seed_zero() -> anyhow::Result<()> {
        let args = parse(&["--listen", "127.0.0.1:0", "--upstream", "[::1]:4433"])?;
        let config = args.config()?;
        assert_eq!((config.up, config.seed), (Profile::lan(), 0));
        assert_eq!(args.stats_every, None);
        Ok(())
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let base = ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"];
        let error = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            parse(&args)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            error(&["--profile", "dialup"]).contains("cellular"),
            "names the known profiles"
        );
        for period in ["0", "NaN", "soon", "1e12"] {
            assert!(
                error(&["--stats-every", period]).contains("stats-every"),
                "{period} is refused"
            );
        }
        // clap reads a leading dash as another flag, which is refused too.
        assert!(!error(&["--stats-every", "-1"]).is_empty());
        assert!(
            parse(&["--upstream", "127.0.0.1:1"]).is_err(),
            "--listen is required"
        );
    }
}
