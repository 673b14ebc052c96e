//! The `duet-bench` command line: scenarios as subcommands, their options, and the output
//! (table on stdout, JSON with `--json`, SVG charts with `--charts`).
//!
//! ```text
//! duet-bench forward --pairs 10,25,50,100 --seconds 10 --json forward.json --charts bench/
//! duet-bench smoke --json smoke.json
//! ```

use super::adaptation::{self, Adaptation};
use super::chart::{Chart, Scale, Series};
use super::forward::{self, ForwardRun, LoadOptions, PathRun, Shaping};
use super::load::MediaSpec;
use super::procfs::Machine;
use super::report::{targets_table, Table, Target};
use super::{handover, matching, process, resume, sessions, soak, BenchError, Common};
use crate::impair::{AddressChange, Profile};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "duet-bench",
    about = "Benchmarks the Duet relay: starts the real relay binary, drives it with native clients on loopback, prints a table and writes JSON"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Write the figures as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Write SVG charts into this folder (forward, floor, impaired).
    #[arg(long, global = true)]
    pub charts: Option<PathBuf>,
    /// The relay binary; default: target/release/duet-relay, rebuilt first if stale.
    #[arg(long, env = "DUET_RELAY_BIN", global = true)]
    pub relay_bin: Option<PathBuf>,
    /// Do not run `cargo build --release -p duet-relay` before starting.
    #[arg(long, global = true)]
    pub no_build: bool,
    /// UDP socket buffer size for the relay, the floor and the client endpoints, in bytes
    /// (the kernel caps it at net.core.rmem_max / wmem_max).
    #[arg(long, default_value_t = 8 << 20, global = true)]
    pub socket_buffer: usize,
    /// Sessions per client endpoint (UDP socket) in the load generator.
    #[arg(long, default_value_t = 50, global = true)]
    pub sessions_per_endpoint: usize,
    /// QUIC idle timeout of relay and clients, ms (keep-alives at a third of it).
    #[arg(long, default_value_t = 10_000, global = true)]
    pub idle_timeout_ms: u64,
    #[arg(long, default_value_t = 1, global = true)]
    pub seed: u64,
    /// Extra flag for the relay, repeatable (e.g. --relay-arg=--max-media-kbps=4000).
    #[arg(long = "relay-arg", global = true, allow_hyphen_values = true)]
    pub relay_args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct MediaArgs {
    /// Video bitrate per sender, kbit/s.
    #[arg(long, default_value_t = 1000)]
    pub video_kbps: u32,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Audio packets per second per sender.
    #[arg(long, default_value_t = 50)]
    pub audio_pps: u32,
    #[arg(long, default_value_t = 80)]
    pub audio_bytes: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Adaptive senders ignore their own RTT (they follow only the partner's reports and
    /// the send estimate), to compare with the sub-second queue signal they use by default.
    #[arg(long)]
    pub no_rtt_signal: bool,
}

impl MediaArgs {
    fn spec(&self) -> MediaSpec {
        MediaSpec {
            video_kbps: self.video_kbps,
            fps: self.fps,
            audio_pps: self.audio_pps,
            audio_bytes: self.audio_bytes,
            keyframe_every: Duration::from_secs(2),
            adaptive: false,
            rtt_signal: !self.no_rtt_signal,
            sealed: false,
        }
    }

    fn load(&self, pairs: usize, default_seconds: f64) -> LoadOptions {
        LoadOptions {
            pairs,
            seconds: self.seconds.unwrap_or(default_seconds),
            warmup: self.warmup,
            media: self.spec(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N clients join at once and in a stream: connect → Matched; Next → first media.
    Match {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Arrivals per second in the stream phase.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Next presses to measure.
        #[arg(long, default_value_t = 50)]
        nexts: usize,
    },
    /// P pairs sending video + audio through the relay (and the floor, unless --no-floor).
    Forward {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        media: MediaArgs,
        /// Pairs; a comma-separated list runs each size (the CPU-against-load chart).
        #[arg(long, value_delimiter = ',', default_value = "100")]
        pairs: Vec<usize>,
        /// Shaper profile in front of one end of each pair.
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        no_floor: bool,
        /// Run each load size a second time with every frame sealed end to end, and compare
        /// the relay's CPU per datagram (it never reads a payload: it should not change).
        #[arg(long)]
        sealed_too: bool,
    },
    /// `forward` with the plain UDP floor in the same run: the relay's cost as a ratio.
    Floor {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        media: MediaArgs,
        #[arg(long, value_delimiter = ',', default_value = "100")]
        pairs: Vec<usize>,
    },
    /// K idle sessions: relay memory per session and the most sessions held.
    Sessions {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds to hold the sessions before the final reading.
        #[arg(long, default_value_t = 8.0)]
        hold: f64,
    },
    /// `forward` through each named shaper profile, one row each.
    Impaired {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        media: MediaArgs,
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "lan,wifi,cellular,lossy,congested"
        )]
        profiles: Vec<String>,
        /// Shape both ends of each pair (default: one end, so each direction crosses the
        /// profile once).
        #[arg(long)]
        shape_both: bool,
        /// Senders adapt their video as the apps do (from --video-kbps, up to 2,500 kbit/s,
        /// following the partner's reports and the send estimate) instead of a fixed rate.
        #[arg(long)]
        adaptive: bool,
    },
    /// Pairs in a call while one end of each hands over between Wi-Fi and cellular.
    Handover {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        media: MediaArgs,
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        /// Seconds between handovers (`train` has its own: every 20–60 s).
        #[arg(long, default_value_t = 5.0)]
        every: f64,
        /// What each handover changes toward the relay: `port` (a NAT rebinding: quinn
        /// keeps its path state) or `ip` (another network: a new path, validated afresh).
        #[arg(long, default_value = "port")]
        change: AddressChange,
        /// The network the moving end hands over to: cellular, cellular-walk (a rate that
        /// swings between 0.3 and 10 Mbit/s) or train (long fades, a new cell every 20–60 s).
        #[arg(long, default_value = "cellular")]
        network: String,
        /// Send video at --video-kbps throughout instead of adapting (by default each
        /// sender starts there and follows its partner's reports and its send estimate, up
        /// to 2,500 kbit/s, as the apps do).
        #[arg(long)]
        fixed_rate: bool,
    },
    /// Pairs in a call while one end of each loses its network for longer than the idle
    /// timeout and comes back with its resume token: media back after the network returns,
    /// same partner or not. Set --idle-timeout-ms below --outage-ms (default 2000 / 5000).
    Resume {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        /// Outages per pair.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// How long the network is gone, ms.
        #[arg(long, default_value_t = 5000)]
        outage_ms: u64,
    },
    /// A churning population (joins, Nexts, leaves, cuts and resumes, bad input) against
    /// one relay: memory, sessions, fds and threads at the start and the end, both quiet.
    /// Cuts need a short idle timeout: above 2000 ms it is set to 1500 ms.
    Soak {
        #[command(flatten)]
        common: CommonArgs,
        /// Minutes of churn measured (after the warm-up).
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// People at once.
        #[arg(long, default_value_t = 40)]
        population: usize,
        /// Seconds of the same churn before the start reading.
        #[arg(long, default_value_t = 30.0)]
        warmup: f64,
        /// Groups of people behind a shaper that is cut (blacked out) in turn; a quarter
        /// of the population is direct.
        #[arg(long, default_value_t = 3)]
        cut_groups: usize,
        /// Seconds between cuts.
        #[arg(long, default_value_t = 15.0)]
        cut_every: f64,
        /// The relay's --resume-grace-s.
        #[arg(long, default_value_t = 5)]
        resume_grace_s: u64,
        /// Seconds between readings during the run.
        #[arg(long, default_value_t = 10.0)]
        sample_every: f64,
    },
    /// Every scenario at a tiny size (CI): checks the runner works, nothing about speed.
    Smoke {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// The plain UDP floor forwarder (started by `forward` and `floor`).
    #[command(hide = true)]
    FloorForwarder {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 8 << 20)]
        socket_buffer: usize,
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
}

fn common(args: &CommonArgs) -> Result<Common, BenchError> {
    let relay_bin = match &args.relay_bin {
        Some(p) => p.clone(),
        None => {
            if !args.no_build {
                eprintln!("duet-bench: building the relay (release)…");
                process::build_relay()?;
            }
            process::default_relay_bin()
        }
    };
    if !relay_bin.exists() {
        return Err(BenchError::Process(format!(
            "no relay binary at {}; build it with `cargo build --release -p duet-relay` or pass --relay-bin",
            relay_bin.display()
        )));
    }
    Ok(Common {
        relay_bin,
        socket_buffer: args.socket_buffer,
        sessions_per_endpoint: args.sessions_per_endpoint,
        idle_timeout_ms: args.idle_timeout_ms,
        seed: args.seed,
        relay_args: args.relay_args.clone(),
    })
}

/// What a scenario produced: its tables, its JSON and its charts (file name, SVG).
pub struct Outcome {
    pub tables: Vec<Table>,
    pub json: Value,
    pub charts: Vec<(String, String)>,
}

/// A scenario's tables, and its report as JSON with the scenario's name added.
fn report_outcome<T: serde::Serialize>(scenario: &str, report: &T, tables: Vec<Table>) -> Outcome {
    let mut json = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Some(o) = json.as_object_mut() {
        o.insert("scenario".into(), scenario.into());
    }
    Outcome {
        tables,
        json,
        charts: vec![],
    }
}

/// Puts the single run's fields at the top level too, so `jq .latency_ms_p99` works.
fn runs_json(scenario: &str, runs: &[ForwardRun]) -> Value {
    let mut top = json!({ "scenario": scenario, "runs": runs });
    if let (Some(obj), [only]) = (top.as_object_mut(), runs) {
        if let Ok(Value::Object(run)) = serde_json::to_value(only) {
            for (k, v) in run {
                obj.entry(k).or_insert(v);
            }
        }
    }
    top
}

fn cpu_chart(runs: &[ForwardRun]) -> Option<(String, String)> {
    if runs.is_empty() {
        return None;
    }
    let series = |name: &str, pick: &dyn Fn(&ForwardRun) -> Option<f64>| Series {
        name: name.into(),
        points: runs
            .iter()
            .filter_map(|r| Some((r.relay.pairs as f64, pick(r)?)))
            .collect(),
    };
    let chart = Chart {
        title: "CPU per forwarded datagram against load (1 Mbit/s video + audio per sender)".into(),
        x_label: "pairs in a call".into(),
        y_label: "CPU µs per forwarded datagram".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        y_from_zero: true,
    };
    Some((
        "cpu-per-datagram.svg".into(),
        chart.svg(&[
            series("relay (QUIC)", &|r| r.relay.relay_cpu_us_per_datagram),
            series("floor (plain UDP)", &|r| {
                r.floor.as_ref()?.relay_cpu_us_per_datagram
            }),
        ]),
    ))
}

fn latency_chart(file: &str, title: &str, rows: &[(String, &PathRun)]) -> (String, String) {
    let chart = Chart {
        title: title.into(),
        x_label: "percentile".into(),
        y_label: "one-way latency, ms (log scale)".into(),
        x_scale: Scale::Nines,
        y_scale: Scale::Log10,
        y_from_zero: false,
    };
    let series: Vec<Series> = rows
        .iter()
        .map(|(name, r)| Series {
            name: name.clone(),
            points: r.latency_cdf.clone(),
        })
        .collect();
    (file.into(), chart.svg(&series))
}

async fn forward_outcome(
    scenario: &str,
    c: &Common,
    pairs: &[usize],
    media: &MediaArgs,
    profile: Option<&str>,
    with_floor: bool,
    sealed_too: bool,
) -> Result<Outcome, BenchError> {
    let shaping = match profile {
        Some(name) => Some(Shaping {
            name: name.to_string(),
            profile: Profile::named(name).map_err(|e| BenchError::Setup(e.to_string()))?,
            both: false,
            handovers: None,
        }),
        None => None,
    };
    let load = media.load(1, 10.0);
    let runs = forward::forward(c, pairs, &load, with_floor, sealed_too, shaping.as_ref()).await?;
    let mut tables = forward::forward_tables(&runs);
    let targets: Vec<Target> = runs.iter().flat_map(|r| r.targets.clone()).collect();
    tables.push(targets_table(&targets));
    let mut charts: Vec<(String, String)> = cpu_chart(&runs).into_iter().collect();
    if let Some(last) = runs.last() {
        let mut rows = vec![("relay".to_string(), &last.relay)];
        if let Some(f) = &last.floor {
            rows.push(("floor (plain UDP)".to_string(), f));
        }
        charts.push(latency_chart(
            "forward-latency.svg",
            &format!("One-way latency on loopback, {} pairs", last.relay.pairs),
            &rows,
        ));
    }
    Ok(Outcome {
        tables,
        json: runs_json(scenario, &runs),
        charts,
    })
}

/// Runs one scenario (not `floor-forwarder`, which the binary runs itself).
pub async fn run(scenario: &Scenario) -> Result<Outcome, BenchError> {
    match scenario {
        Scenario::Match {
            common: a,
            clients,
            rate,
            nexts,
        } => {
            let c = common(a)?;
            let r = matching::run(&c, *clients, *rate, *nexts).await?;
            let tables = vec![matching::table(&r), targets_table(&r.targets)];
            Ok(report_outcome("match", &r, tables))
        }
        Scenario::Forward {
            common: a,
            media,
            pairs,
            profile,
            no_floor,
            sealed_too,
        } => {
            let c = common(a)?;
            forward_outcome(
                "forward",
                &c,
                pairs,
                media,
                profile.as_deref(),
                !no_floor,
                *sealed_too,
            )
            .await
        }
        Scenario::Floor {
            common: a,
            media,
            pairs,
        } => {
            let c = common(a)?;
            forward_outcome("floor", &c, pairs, media, None, true, false).await
        }
        Scenario::Sessions {
            common: a,
            sessions: k,
            concurrency,
            hold,
        } => {
            let c = common(a)?;
            let r =
                sessions::run(&c, *k, *concurrency, Duration::from_secs_f64(hold.max(0.0))).await?;
            let tables = vec![sessions::table(&r), targets_table(&r.targets)];
            Ok(report_outcome("sessions", &r, tables))
        }
        Scenario::Impaired {
            common: a,
            media,
            pairs,
            profiles,
            shape_both,
            adaptive,
        } => {
            let c = common(a)?;
            let mut load = media.load(*pairs, 10.0);
            load.media.adaptive = *adaptive;
            let run = forward::impaired(&c, profiles, &load, *shape_both).await?;
            let labelled: Vec<(String, &PathRun)> = run
                .rows
                .iter()
                .map(|r| (r.profile.clone().unwrap_or_default(), r))
                .collect();
            let mut tables = vec![forward::media_table(
                &format!(
                    "Impaired networks: {} pairs, {} through the profile, one-way latency end to end{}",
                    load.pairs,
                    if *shape_both { "both ends" } else { "one end of each pair" },
                    if *adaptive { ", adaptive senders" } else { "" }
                ),
                "profile",
                &labelled,
            )];
            if run.rows.iter().any(|r| r.frames_in_fades_share.is_some()) {
                tables.push(forward::fades_table(&labelled));
            }
            if !run.adaptation.is_empty() {
                let rows: Vec<(String, &Adaptation)> =
                    run.adaptation.iter().map(|(n, a)| (n.clone(), a)).collect();
                tables.push(adaptation::table(
                    &rows,
                    load.media.video_kbps,
                    load.media.max_kbps(),
                ));
            }
            tables.push(targets_table(&run.targets));
            let charts = vec![latency_chart(
                "latency-by-profile.svg",
                &format!("One-way latency per network profile ({} pairs)", load.pairs),
                &labelled,
            )];
            let json = json!({
                "scenario": "impaired",
                "adaptive": adaptive,
                "profiles": run.rows,
                "adaptation": run.adaptation,
                "targets": run.targets,
            });
            Ok(Outcome {
                tables,
                json,
                charts,
            })
        }
        Scenario::Handover {
            common: a,
            media,
            pairs,
            every,
            change,
            network,
            fixed_rate,
        } => {
            let c = common(a)?;
            let mut load = media.load(*pairs, 30.0);
            load.media.adaptive = !fixed_rate;
            let every = Duration::from_secs_f64(every.max(0.5));
            let r = handover::run(&c, &load, every, *change, network).await?;
            Ok(report_outcome("handover", &r, handover::tables(&r)))
        }
        Scenario::Resume {
            common: a,
            pairs,
            rounds,
            outage_ms,
        } => {
            let mut c = common(a)?;
            if c.idle_timeout_ms >= *outage_ms {
                // The default 10 s idle timeout would outlast the outage: nothing to resume.
                c.idle_timeout_ms = 2_000.min(outage_ms / 2);
            }
            let r = resume::run(&c, *pairs, *rounds, Duration::from_millis(*outage_ms)).await?;
            Ok(report_outcome("resume", &r, resume::tables(&r)))
        }
        Scenario::Soak {
            common: a,
            minutes,
            population,
            warmup,
            cut_groups,
            cut_every,
            resume_grace_s,
            sample_every,
        } => {
            let mut c = common(a)?;
            if c.idle_timeout_ms > 2_000 {
                // A cut must outlast the idle timeout, and cuts come every few seconds.
                c.idle_timeout_ms = 1_500;
            }
            let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
            let o = soak::SoakOptions {
                population: (*population).max(2),
                run: secs(minutes * 60.0),
                warmup: secs(*warmup),
                cut_groups: *cut_groups,
                cut_every: secs(cut_every.max(1.0)),
                resume_grace_s: *resume_grace_s,
                sample_every: secs(*sample_every),
            };
            let r = soak::run(&c, &o).await?;
            Ok(report_outcome("soak", &r, soak::tables(&r)))
        }
        Scenario::Smoke { common: a } => smoke(a).await,
        Scenario::FloorForwarder { .. } => {
            Err(BenchError::Setup("floor-forwarder runs in main".into()))
        }
    }
}

/// Every scenario, tiny. Fails only when the runner is broken (nothing delivered, nobody
/// matched), never on speed.
async fn smoke(a: &CommonArgs) -> Result<Outcome, BenchError> {
    let c = common(a)?;
    let mut tables = Vec::new();
    let mut json = json!({ "scenario": "smoke" });
    let tiny = |pairs: usize, seconds: f64| LoadOptions {
        pairs,
        seconds,
        warmup: 0.5,
        media: MediaArgs {
            video_kbps: 300,
            fps: 30,
            audio_pps: 50,
            audio_bytes: 80,
            seconds: None,
            warmup: 0.5,
            no_rtt_signal: false,
        }
        .spec(),
    };
    let check = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(BenchError::Smoke(what.to_string()))
        }
    };

    let m = matching::run(&c, 6, 200.0, 2).await?;
    check(
        m.connect_to_matched_ms.count >= 3,
        "match: every pairing recorded",
    )?;
    check(
        m.next_to_first_datagram_ms.count >= 1,
        &format!(
            "match: a Next got media from a new partner (failures: {:?})",
            m.failures
        ),
    )?;
    tables.push(matching::table(&m));
    json["match"] = serde_json::to_value(&m).unwrap_or(Value::Null);

    let runs = forward::forward(&c, &[2], &tiny(2, 1.0), true, true, None).await?;
    let delivered = |r: &PathRun| r.frames_delivered > 0 && r.datagrams_forwarded > 0;
    check(
        runs.iter()
            .all(|r| delivered(&r.relay) && r.floor.as_ref().is_some_and(delivered)),
        "forward: media delivered through relay and floor",
    )?;
    check(
        runs.iter().all(|r| r.relay_cpu_ratio_to_floor.is_some()),
        "forward: CPU ratio measured",
    )?;
    check(
        runs.iter()
            .all(|r| r.sealed.as_ref().is_some_and(delivered)),
        "forward: sealed media delivered through the relay",
    )?;
    tables.extend(forward::forward_tables(&runs));
    json["forward"] = runs_json("forward", &runs);

    let s = sessions::run(&c, 20, 8, Duration::from_millis(500)).await?;
    check(s.sessions_held == 20, "sessions: all 20 held")?;
    tables.push(sessions::table(&s));
    json["sessions"] = serde_json::to_value(&s).unwrap_or(Value::Null);

    let rows = forward::impaired(&c, &["lan".into(), "cellular".into()], &tiny(1, 1.0), false)
        .await?
        .rows;
    check(
        rows.iter().all(delivered),
        "impaired: media delivered through every profile",
    )?;
    let labelled: Vec<(String, &PathRun)> = rows
        .iter()
        .map(|r| (r.profile.clone().unwrap_or_default(), r))
        .collect();
    tables.push(forward::media_table(
        "Impaired (smoke)",
        "profile",
        &labelled,
    ));
    json["impaired"] = json!({ "profiles": rows });

    let mut adaptive = tiny(1, 2.5);
    adaptive.media.adaptive = true;
    let h = handover::run(
        &c,
        &adaptive,
        Duration::from_secs(1),
        AddressChange::Ip,
        "cellular-walk",
    )
    .await?;
    check(
        h.handovers > 0,
        "handover: a handover with a new address happened",
    )?;
    check(h.media.frames_delivered > 0, "handover: media delivered")?;
    check(
        h.adaptation
            .as_ref()
            .is_some_and(|a| a.mean_target_kbps.is_some()),
        "handover: the adaptive sender's rate was sampled",
    )?;
    tables.extend(handover::tables(&h));
    json["handover"] = serde_json::to_value(&h).unwrap_or(Value::Null);

    let mut short = c.clone();
    short.idle_timeout_ms = 600;
    let r = resume::run(&short, 1, 1, Duration::from_millis(1500)).await?;
    check(r.same_partner == 1, "resume: the same partner came back")?;
    tables.extend(resume::tables(&r));
    json["resume"] = serde_json::to_value(&r).unwrap_or(Value::Null);

    let mut short = c.clone();
    short.idle_timeout_ms = 800;
    let soaked = soak::run(
        &short,
        &soak::SoakOptions {
            population: 6,
            run: Duration::from_secs(5),
            warmup: Duration::from_secs(2),
            cut_groups: 1,
            // One group cut every second for 1.8 s (the idle timeout + 1 s) was dark for
            // the whole run: its people could only resume after the last cut, when the
            // relay's 3 s grace had run out, so every resume was refused. One cut, over
            // by 4.3 s, leaves the grace (which starts at ~3.3 s) time to see them back.
            cut_every: Duration::from_millis(2500),
            resume_grace_s: 3,
            sample_every: Duration::from_secs(2),
        },
    )
    .await?;
    let did = |k: &str| soaked.activity.get(k).copied().unwrap_or(0);
    check(
        did("joins") >= 6 && did("matched") >= 1 && soaked.start.rss_mib > 0.0,
        &format!(
            "soak: people joined and were paired, and the relay was read (failures: {:?})",
            soaked.failures
        ),
    )?;
    tables.extend(soak::tables(&soaked));
    json["soak"] = serde_json::to_value(&soaked).unwrap_or(Value::Null);
    Ok(Outcome {
        tables,
        json,
        charts: vec![],
    })
}

/// The common arguments of a scenario, for output options.
pub fn common_args(s: &Scenario) -> Option<&CommonArgs> {
    match s {
        Scenario::Match { common, .. }
        | Scenario::Forward { common, .. }
        | Scenario::Floor { common, .. }
        | Scenario::Sessions { common, .. }
        | Scenario::Impaired { common, .. }
        | Scenario::Handover { common, .. }
        | Scenario::Resume { common, .. }
        | Scenario::Soak { common, .. }
        | Scenario::Smoke { common } => Some(common),
        Scenario::FloorForwarder { .. } => None,
    }
}

/// Adds what every JSON report carries: the command line, the machine, the time.
pub fn envelope(mut json: Value, command: &str) -> Value {
    if let Some(o) = json.as_object_mut() {
        o.insert("command".into(), command.into());
        o.insert(
            "machine".into(),
            serde_json::to_value(Machine::describe()).unwrap_or(Value::Null),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        o.insert("unix_time".into(), now.into());
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_for_every_scenario() {
        let p = |args: &[&str]| BenchArgs::try_parse_from(args).map(|a| a.scenario);
        match p(&[
            "duet-bench",
            "forward",
            "--pairs",
            "10,100",
            "--seconds",
            "3",
            "--json",
            "x.json",
        ]) {
            Ok(Scenario::Forward {
                pairs,
                media,
                common,
                ..
            }) => {
                assert_eq!(pairs, vec![10, 100]);
                assert_eq!(media.seconds, Some(3.0));
                assert_eq!(common.json, Some(PathBuf::from("x.json")));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p(&["duet-bench", "smoke"]),
            Ok(Scenario::Smoke { .. })
        ));
        assert!(matches!(
            p(&["duet-bench", "match", "--clients", "10"]),
            Ok(Scenario::Match { clients: 10, .. })
        ));
        assert!(matches!(
            p(&["duet-bench", "sessions", "--sessions", "100"]),
            Ok(Scenario::Sessions { sessions: 100, .. })
        ));
        assert!(matches!(
            p(&["duet-bench", "impaired", "--profiles", "lan,cellular"]),
            Ok(Scenario::Impaired { .. })
        ));
        assert!(matches!(
            p(&["duet-bench", "handover", "--every", "2"]),
            Ok(Scenario::Handover { .. })
        ));
        assert!(matches!(
            p(&[
                "duet-bench",
                "soak",
                "--minutes",
                "0.5",
                "--population",
                "8"
            ]),
            Ok(Scenario::Soak { population: 8, .. })
        ));
        assert!(p(&["duet-bench", "nope"]).is_err());
    }

    #[test]
    fn a_single_run_is_also_at_the_top_level() {
        let run = ForwardRun {
            relay: PathRun {
                pairs: 3,
                latency_ms_p99: Some(1.5),
                ..PathRun::default()
            },
            floor: None,
            relay_cpu_ratio_to_floor: Some(2.0),
            relay_latency_ms_p99_over_floor: None,
            sealed: None,
            relay_cpu_ratio_sealed_to_clear: None,
            targets: vec![],
        };
        let one = runs_json("forward", std::slice::from_ref(&run));
        assert_eq!(one["scenario"], "forward");
        assert_eq!(one["pairs"], 3);
        assert_eq!(one["latency_ms_p99"], 1.5);
        assert_eq!(one["runs"][0]["relay_cpu_ratio_to_floor"], 2.0);
        let two = runs_json("forward", &[run.clone(), run]);
        assert!(two.get("pairs").is_none());
        assert_eq!(two["runs"].as_array().map(Vec::len), Some(2));
        let wrapped = envelope(two, "duet-bench forward");
        assert_eq!(wrapped["command"], "duet-bench forward");
        assert!(wrapped["machine"]["cpus"].as_u64().is_some_and(|n| n >= 1));
    }

    #[test]
    fn charts_come_from_runs() {
        let run = ForwardRun {
            relay: PathRun {
                pairs: 10,
                relay_cpu_us_per_datagram: Some(12.0),
                ..PathRun::default()
            },
            floor: Some(PathRun {
                relay_cpu_us_per_datagram: Some(4.0),
                ..PathRun::default()
            }),
            relay_cpu_ratio_to_floor: Some(3.0),
            relay_latency_ms_p99_over_floor: None,
            sealed: None,
            relay_cpu_ratio_sealed_to_clear: None,
            targets: vec![],
        };
        let (name, svg) = cpu_chart(&[run]).expect("a chart");
        assert_eq!(name, "cpu-per-datagram.svg");
        assert_eq!(svg.matches("<circle").count(), 2);
    }
}
