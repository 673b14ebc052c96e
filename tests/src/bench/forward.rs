//! The media scenarios: `forward` and `floor` (the relay and the plain UDP floor under the
//! same load, in the same run), `impaired` (the relay through each shaper profile) and the
//! driving half of `handover`.
//!
//! One function, [`drive`], runs a load against either forwarder: it sets the pairs up,
//! starts the sender and the receive tasks, samples the forwarder's CPU and counters at the
//! start and end of the measured window, drains in-flight media, and returns a [`PathRun`].

use super::adaptation::{self, Adaptation};
use super::load::{
    self, Fades, GapWindows, MediaSpec, RecvReport, SendReport, Slot, Transport, Window,
};
use super::process::{FloorProcess, RelayProcess};
use super::procfs::{self, CpuSample};
use super::report::{num, pct, Table, Target};
use super::stats::{ratio, round3, round_sig, LatencyHistogram};
use super::{BenchError, Common};
use crate::impair::{Direction, Profile, Shaper, ShaperConfig, ShaperHandle};
use duet_client::{Client, ClientEndpoint};
use duet_proto::ServerMsg;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest wait for one pair to be connected and matched during setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest wait for the receive tasks to hand their figures back after the stop signal.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sender's lag (p99) beyond which the load generator counts as behind schedule.
const BEHIND_LAG_MS: f64 = 5.0;

/// The load of one run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub pairs: usize,
    pub seconds: f64,
    pub warmup: f64,
    pub media: MediaSpec,
}

/// A shaper profile in front of one end of each pair (both ends with `both`).
#[derive(Debug, Clone)]
pub struct Shaping {
    pub name: String,
    pub profile: Profile,
    pub both: bool,
    /// With handovers: when they happen, counted from the shaper's start, for
    /// per-handover gap windows.
    pub handovers: Option<Vec<Duration>>,
}

/// One forwarder under one load: what the tables and the JSON show. In a floor run the
/// `relay_*` figures are the floor forwarder process's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PathRun {
    pub forwarder: String,
    pub profile: Option<String>,
    pub pairs: usize,
    pub seconds: f64,
    pub video_kbps: u32,
    pub audio_pps: u32,
    pub frames_sent: u64,
    pub frames_delivered: u64,
    pub delivered_ratio: Option<f64>,
    pub datagrams_sent: u64,
    pub datagrams_delivered: u64,
    pub datagrams_forwarded: u64,
    pub bytes_forwarded: u64,
    pub forwarded_per_s: f64,
    pub forwarder_drops: Option<serde_json::Value>,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub latency_ms_max: Option<f64>,
    /// `(percentile, ms)` points of the latency distribution, for the charts.
    pub latency_cdf: Vec<(f64, f64)>,
    /// On a link whose rate walks: the share of frames sent while it carried less than the
    /// senders' floor (see [`load::Fades`]), and delivery and latency of the other frames.
    pub frames_in_fades_share: Option<f64>,
    pub delivered_ratio_outside_fades: Option<f64>,
    pub latency_ms_p95_outside_fades: Option<f64>,
    /// The share of video frames captured in the window that adaptive senders did not send
    /// because their video was paused (the link carried less than their floor): they are
    /// in neither `frames_sent` nor `frames_delivered`.
    pub video_frames_paused_share: Option<f64>,
    pub relay_cpu_s: f64,
    pub relay_cpu_user_s: f64,
    pub relay_cpu_system_s: f64,
    /// CPU cores the forwarder kept busy on average over the window.
    pub relay_cpu_cores: f64,
    pub relay_cpu_us_per_datagram: Option<f64>,
    pub relay_cpu_s_per_million_datagrams: Option<f64>,
    pub relay_cpu_s_per_gb: Option<f64>,
    pub relay_rss_mb: f64,
    pub relay_rss_peak_mb: f64,
    /// CPU cores the load generator (this process: clients, sender, shapers) used.
    pub loadgen_cpu_cores: f64,
    /// CPU cores everything else on the machine used meanwhile (other builds and tests on
    /// a shared machine): high values make every figure here less trustworthy.
    pub other_cpu_cores: f64,
    pub send_lag_ms_p99: Option<f64>,
    pub frames_skipped: u64,
    /// The generator fell behind its schedule (lag or skipped frames): the figures then
    /// describe the generator as much as the forwarder.
    pub loadgen_behind: bool,
    pub sessions_lost: u64,
    pub rematches: u64,
    pub errors: Vec<String>,
}

/// What a [`drive`] hands back besides the row: each pair's two receive reports (the
/// shaped end first) for the handover figures.
pub struct PairReports {
    pub shaped: RecvReport,
    pub partner: RecvReport,
    /// With shaping and an adaptive sender: the shaped end's sending against its link's
    /// capacity, sampled every [`RATE_SAMPLE_EVERY`] over the window.
    pub rates: Vec<RateSample>,
}

/// How often [`RateSample`]s are taken.
pub const RATE_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One look at a shaped sender: counters since its start, and its link now.
#[derive(Debug, Clone, Copy)]
pub struct RateSample {
    /// Since the pair's shaper started (the clock its handover times use).
    pub at: Duration,
    /// Media datagram bytes sent so far, all of it and video alone.
    pub bytes: u64,
    pub video_bytes: u64,
    /// The sender's video target, kbit/s.
    pub target_kbps: u32,
    /// The uplink's bottleneck, bit/s (`None`: no limit on this network).
    pub capacity_bps: Option<u64>,
}

/// The forwarder a run goes through.
pub enum Forwarder<'a> {
    Relay(&'a RelayProcess),
    Floor(&'a mut FloorProcess),
}

struct Sample {
    at: Instant,
    cpu: CpuSample,
    own: CpuSample,
    machine: f64,
    datagrams: u64,
    bytes: u64,
    drops: Option<serde_json::Value>,
}

async fn sample(fwd: &mut Forwarder<'_>) -> Result<Sample, BenchError> {
    let at = Instant::now();
    let (pid, datagrams, bytes, drops) = match fwd {
        Forwarder::Relay(r) => {
            let s = r.status().await?;
            let n = |k: &str| s.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            (
                r.pid_str(),
                n("datagrams_forwarded"),
                n("bytes_forwarded"),
                s.get("drops").cloned(),
            )
        }
        Forwarder::Floor(f) => {
            let (d, b) = f.counters()?;
            (f.pid_str(), d, b, None)
        }
    };
    let cpu =
        procfs::cpu(&pid).ok_or_else(|| BenchError::Process(format!("cannot read /proc/{pid}")))?;
    let own = procfs::cpu("self").unwrap_or_default();
    let machine = procfs::machine_busy_s().unwrap_or(0.0);
    Ok(Sample {
        at,
        cpu,
        own,
        machine,
        datagrams,
        bytes,
        drops,
    })
}

fn drops_delta(
    a: &Option<serde_json::Value>,
    b: &Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    let (a, b) = (a.as_ref()?.as_object()?, b.as_ref()?.as_object()?);
    let mut out = serde_json::Map::new();
    for (k, v) in b {
        let before = a.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        out.insert(
            k.clone(),
            (v.as_u64().unwrap_or(0).saturating_sub(before)).into(),
        );
    }
    Some(out.into())
}

/// Waits for `Matched` on a fresh session.
async fn matched(c: &mut Client) -> Result<u64, BenchError> {
    Ok(c.wait_for(SETUP_TIMEOUT, "Matched", |m| match m {
        ServerMsg::Matched(m) => Some(m.match_id),
        _ => None,
    })
    .await?)
}

struct Setup {
    slots: Vec<Arc<Slot>>,
    clients: Vec<Client>,
    /// Per pair: when its shaper's timeline started (for handover windows).
    origins: Vec<Option<Instant>>,
    _shapers: Vec<ShaperHandle>,
    _endpoints: Vec<Arc<ClientEndpoint>>,
}

/// Sessions ready to carry media, before any is sent.
enum Prepared {
    Quic(Setup),
    Udp(Vec<Arc<Slot>>),
}

async fn setup_relay(
    relay: &RelayProcess,
    common: &Common,
    load: &LoadOptions,
    shaping: Option<&Shaping>,
) -> Result<Setup, BenchError> {
    let idle = common.idle_timeout();
    let sessions = load.pairs * 2;
    let per = common.sessions_per_endpoint.max(1);
    let endpoints = load::endpoints(relay.cert_hash, common, sessions)?;
    let mut s = Setup {
        slots: Vec::new(),
        clients: Vec::new(),
        origins: Vec::new(),
        _shapers: Vec::new(),
        _endpoints: Vec::new(),
    };
    for p in 0..load.pairs {
        let mut origin = None;
        let mut pair = Vec::new();
        for end in 0..2 {
            let i = p * 2 + end;
            let mut target = relay.quic;
            if let Some(sh) = shaping.filter(|sh| end == 0 || sh.both) {
                let cfg =
                    ShaperConfig::new(([127, 0, 0, 1], 0).into(), relay.quic, sh.profile.clone())
                        .with_seed(common.seed.wrapping_add(i as u64));
                let shaper = Shaper::start(cfg).await?;
                origin.get_or_insert_with(Instant::now);
                target = shaper.local_addr();
                s._shapers.push(shaper);
            }
            let opts = load::connect_options(target, relay.cert_hash, idle);
            let endpoint = &endpoints[i / per];
            let mut c = tokio::time::timeout(SETUP_TIMEOUT, Client::connect_on(endpoint, &opts))
                .await
                .map_err(|_| BenchError::Setup(format!("session {i} did not connect")))??;
            tokio::time::timeout(SETUP_TIMEOUT, c.hello(&format!("bench-{i}"), &[], None))
                .await
                .map_err(|_| BenchError::Setup(format!("session {i} got no Welcome")))??;
            pair.push(c);
        }
        let mut ids = Vec::new();
        for c in pair.iter_mut() {
            ids.push(matched(c).await?);
        }
        let fades = match (shaping, origin) {
            (Some(sh), Some(o)) => fades(&sh.profile, &load.media, o, load.warmup + load.seconds),
            _ => Fades::default(),
        };
        for (c, id) in pair.into_iter().zip(ids) {
            s.slots.push(Slot::with_fades(
                Transport::Quic(c.connection().clone()),
                id,
                fades.clone(),
            ));
            s.clients.push(c);
        }
        s.origins.push(origin);
    }
    s._endpoints = endpoints;
    Ok(s)
}

/// When a pair's link, its shaper started at `origin`, carries less than the least its
/// senders send, as spans of capture time (see [`Fades`]); none for a link with a timeline
/// of its own (its trace restarts on each new network) or without a walking rate.
fn fades(profile: &Profile, media: &MediaSpec, origin: Instant, seconds: f64) -> Fades {
    let (Some(trace), true) = (&profile.capacity, profile.timeline.is_empty()) else {
        return Fades::default();
    };
    let queue_bits = profile.rate.map_or(0, |r| r.queue_bytes) * 8;
    let wall_origin = load::now_us().saturating_sub(origin.elapsed().as_micros() as u64);
    let until = Duration::from_secs_f64(seconds.max(0.0)) + FADE_MARGIN;
    let delay_us = profile.delay.as_micros() as u64;
    let spans = trace
        .spans_below(u64::from(media.floor_kbps()) * 1000, until)
        .into_iter()
        .map(|b| {
            let drain_us = (queue_bits * 1_000_000)
                .checked_div(b.rate_after)
                .unwrap_or(0);
            (
                (wall_origin + b.start.as_micros() as u64).saturating_sub(delay_us),
                wall_origin + b.end.as_micros() as u64 + delay_us + drain_us,
            )
        })
        .collect();
    Fades::new(spans)
}

/// How far past the measured window fades are listed (setup and warm-up come before it).
const FADE_MARGIN: Duration = Duration::from_secs(60);

async fn setup_floor(
    floor: &FloorProcess,
    common: &Common,
    load: &LoadOptions,
) -> Result<Vec<Arc<Slot>>, BenchError> {
    let mut slots = Vec::new();
    for p in 0..load.pairs {
        for _ in 0..2 {
            let std = super::floor::sized_socket(([127, 0, 0, 1], 0).into(), common.socket_buffer)
                .and_then(|s| s.set_nonblocking(true).map(|_| s))
                .map_err(|e| BenchError::Process(format!("client socket: {e}")))?;
            let socket = tokio::net::UdpSocket::from_std(std)
                .map_err(|e| BenchError::Process(format!("client socket: {e}")))?;
            // Match ids are the pair's number: the floor learns the two ends from them.
            slots.push(Slot::new(
                Transport::Udp {
                    socket: Arc::new(socket),
                    to: floor.addr,
                },
                p as u64 + 1,
            ));
        }
    }
    Ok(slots)
}

/// Runs `load` through `fwd` and measures it.
pub async fn drive(
    mut fwd: Forwarder<'_>,
    common: &Common,
    load: &LoadOptions,
    shaping: Option<&Shaping>,
) -> Result<(PathRun, Vec<PairReports>), BenchError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers = Vec::new();
    let slots;
    let mut origins = Vec::new();
    let mut _keep = None;
    // Sessions are set up first; the window is placed after the warm-up that follows.
    let prepared = match &fwd {
        Forwarder::Relay(relay) => Prepared::Quic(setup_relay(relay, common, load, shaping).await?),
        Forwarder::Floor(floor) => Prepared::Udp(setup_floor(floor, common, load).await?),
    };
    let warmup = Duration::from_secs_f64(load.warmup.max(0.0));
    let seconds = Duration::from_secs_f64(load.seconds.max(0.1));
    let t_start = Instant::now() + warmup;
    let t_end = t_start + seconds;
    let wall_start = load::now_us() + warmup.as_micros() as u64;
    let window = Window {
        start_us: wall_start,
        end_us: wall_start + seconds.as_micros() as u64,
    };
    match prepared {
        Prepared::Quic(setup) => {
            let handovers = shaping.and_then(|s| s.handovers.as_ref());
            for (i, (client, slot)) in setup
                .clients
                .into_iter()
                .zip(setup.slots.iter())
                .enumerate()
            {
                let gaps = match (handovers, setup.origins.get(i / 2).copied().flatten()) {
                    (Some(times), Some(origin)) => {
                        Some(GapWindows::new(times.iter().map(|t| origin + *t).collect()))
                    }
                    _ => None,
                };
                receivers.push(tokio::spawn(load::receive_quic(
                    client,
                    slot.clone(),
                    window,
                    gaps,
                    t_end,
                    load.media,
                    stop_rx.clone(),
                )));
            }
            origins = setup.origins;
            slots = setup.slots;
            _keep = Some((setup._shapers, setup._endpoints));
        }
        Prepared::Udp(udp_slots) => {
            for slot in &udp_slots {
                receivers.push(tokio::spawn(load::receive_udp(
                    slot.clone(),
                    window,
                    stop_rx.clone(),
                )));
            }
            slots = udp_slots;
        }
    }
    // One sender per endpoint's worth of sessions: sending takes each connection's lock,
    // which its driver holds while it encrypts, and one stalled send must not hold up
    // every other session's schedule.
    let senders: Vec<_> = slots
        .chunks(common.sessions_per_endpoint.max(1))
        .map(|group| tokio::spawn(load::send_media(group.to_vec(), load.media, window, t_end)))
        .collect();

    tokio::time::sleep_until(t_start).await;
    let a = sample(&mut fwd).await?;
    // The shaped ends' sending against their links (each pair's shaped end is its first
    // slot, and with one shaper per pair the shapers line up with the pairs).
    let watched: Vec<(usize, Instant, &ShaperHandle)> = match (&_keep, load.media.adaptive) {
        (Some((shapers, _)), true) if shaping.is_some_and(|s| !s.both) => shapers
            .iter()
            .enumerate()
            .filter_map(|(p, sh)| Some((p * 2, origins.get(p).copied().flatten()?, sh)))
            .collect(),
        _ => Vec::new(),
    };
    let mut rates: Vec<Vec<RateSample>> = vec![Vec::new(); origins.len()];
    if watched.is_empty() {
        tokio::time::sleep_until(t_end).await;
    } else {
        let mut tick = tokio::time::interval_at(t_start, RATE_SAMPLE_EVERY);
        while Instant::now() < t_end {
            tick.tick().await;
            for &(i, origin, shaper) in &watched {
                let slot = &slots[i];
                rates[i / 2].push(RateSample {
                    at: Instant::now().saturating_duration_since(origin),
                    bytes: slot.bytes_sent.load(Relaxed),
                    video_bytes: slot.video_bytes_sent.load(Relaxed),
                    target_kbps: slot.video_kbps.load(Relaxed),
                    capacity_bps: shaper.capacity(Direction::Up),
                });
            }
        }
    }
    drop(watched);
    let b = sample(&mut fwd).await?;
    let pid = match &fwd {
        Forwarder::Relay(r) => r.pid_str(),
        Forwarder::Floor(f) => f.pid_str(),
    };
    let (rss, peak) = procfs::rss_mib(&pid).unwrap_or((0.0, 0.0));
    let mut sent = SendReport::default();
    for sender in senders {
        let part = sender
            .await
            .map_err(|e| BenchError::Setup(format!("sender task failed: {e}")))?;
        sent.merge(part);
    }
    // In-flight media (shaper queues hold up to a second) arrives before the receivers stop.
    // Half the window, within 1.2 s (a shaper's queue plus its delay) and 2.5 s (the
    // `congested` profile's full second of buffer, with room to spare).
    let drain = if shaping.is_some() {
        Duration::from_secs_f64((load.seconds / 2.0).clamp(1.2, 2.5))
    } else {
        Duration::from_millis(500)
    };
    tokio::time::sleep(drain).await;
    let _ = stop_tx.send(true);
    let mut reports = Vec::new();
    for r in receivers {
        match tokio::time::timeout(COLLECT_TIMEOUT, r).await {
            Ok(Ok(rep)) => reports.push(rep),
            _ => reports.push(RecvReport {
                lost: true,
                errors: vec!["receive task did not finish".into()],
                ..RecvReport::default()
            }),
        }
    }
    drop(_keep);

    let wall = (b.at - a.at).as_secs_f64().max(1e-3);
    let cpu = a.cpu.until(&b.cpu);
    let own = a.own.until(&b.own);
    let datagrams = b.datagrams.saturating_sub(a.datagrams);
    let bytes = b.bytes.saturating_sub(a.bytes);
    let mut latency = LatencyHistogram::new();
    let mut outside = LatencyHistogram::new();
    let mut delivered_in_fades = 0;
    let mut run = PathRun {
        forwarder: match fwd {
            Forwarder::Relay(_) => "relay".into(),
            Forwarder::Floor(_) => "floor".into(),
        },
        profile: shaping.map(|s| s.name.clone()),
        pairs: load.pairs,
        seconds: round3(wall),
        video_kbps: load.media.video_kbps,
        audio_pps: load.media.audio_pps,
        frames_sent: sent.frames_in_window,
        datagrams_sent: sent.datagrams_in_window,
        datagrams_forwarded: datagrams,
        bytes_forwarded: bytes,
        forwarded_per_s: round3(datagrams as f64 / wall),
        forwarder_drops: drops_delta(&a.drops, &b.drops),
        relay_cpu_s: round3(cpu.total_s),
        relay_cpu_user_s: round3(cpu.user_s),
        relay_cpu_system_s: round3(cpu.system_s),
        relay_cpu_cores: round3(cpu.total_s / wall),
        relay_cpu_us_per_datagram: ratio(cpu.total_s * 1e6, datagrams as f64)
            .map(|v| round_sig(v, 4)),
        relay_cpu_s_per_million_datagrams: ratio(cpu.total_s * 1e6, datagrams as f64)
            .map(|v| round_sig(v, 4)),
        relay_cpu_s_per_gb: ratio(cpu.total_s * 1e9, bytes as f64).map(|v| round_sig(v, 4)),
        relay_rss_mb: round3(rss),
        relay_rss_peak_mb: round3(peak),
        loadgen_cpu_cores: round3(own.total_s / wall),
        other_cpu_cores: round3(
            ((b.machine - a.machine) - cpu.total_s - own.total_s).max(0.0) / wall,
        ),
        send_lag_ms_p99: sent.lag.quantile_ms(0.99),
        frames_skipped: sent.frames_skipped,
        ..PathRun::default()
    };
    for r in &reports {
        run.frames_delivered += r.frames_in_window;
        run.datagrams_delivered += r.datagrams_in_window;
        run.sessions_lost += u64::from(r.lost);
        run.rematches += u64::from(r.matches);
        latency.merge(&r.latency);
        outside.merge(&r.latency_outside_fades);
        delivered_in_fades += r.frames_in_fades;
        for e in &r.errors {
            if run.errors.len() < 10 {
                run.errors.push(e.clone());
            }
        }
    }
    if sent.send_errors > 0 && run.errors.len() < 10 {
        run.errors.push(format!(
            "{} datagrams refused by the sending side",
            sent.send_errors
        ));
    }
    run.delivered_ratio =
        ratio(run.frames_delivered as f64, run.frames_sent as f64).map(|v| (v * 1e5).round() / 1e5);
    let s = latency.summary();
    (
        run.latency_ms_p50,
        run.latency_ms_p95,
        run.latency_ms_p99,
        run.latency_ms_max,
    ) = (s.p50, s.p95, s.p99, s.max);
    run.latency_cdf = latency.cdf();
    if sent.frames_in_fades > 0 {
        let round = |v: f64| (v * 1e5).round() / 1e5;
        run.frames_in_fades_share =
            ratio(sent.frames_in_fades as f64, run.frames_sent as f64).map(round);
        run.delivered_ratio_outside_fades = ratio(
            run.frames_delivered.saturating_sub(delivered_in_fades) as f64,
            run.frames_sent.saturating_sub(sent.frames_in_fades) as f64,
        )
        .map(round);
        run.latency_ms_p95_outside_fades = outside.quantile_ms(0.95);
    }
    if sent.video_frames_paused > 0 {
        run.video_frames_paused_share = ratio(
            sent.video_frames_paused as f64,
            sent.video_frames_in_window as f64,
        )
        .map(|v| (v * 1e5).round() / 1e5);
    }
    run.loadgen_behind =
        run.frames_skipped > 0 || run.send_lag_ms_p99.is_some_and(|l| l > BEHIND_LAG_MS);

    let mut pairs = Vec::new();
    let mut it = reports.into_iter();
    for rates in rates {
        if let (Some(shaped), Some(partner)) = (it.next(), it.next()) {
            pairs.push(PairReports {
                shaped,
                partner,
                rates,
            });
        }
    }
    Ok((run, pairs))
}

/// One `forward` load size: the relay, the floor (unless skipped) and their ratio.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardRun {
    #[serde(flatten)]
    pub relay: PathRun,
    pub floor: Option<PathRun>,
    /// Relay CPU per forwarded datagram over the floor's, same load, same run.
    pub relay_cpu_ratio_to_floor: Option<f64>,
    pub relay_latency_ms_p99_over_floor: Option<f64>,
    /// With `--sealed-too`: the same load again through a fresh relay, every frame sealed
    /// end to end as the apps send it.
    pub sealed: Option<PathRun>,
    /// Relay CPU per forwarded datagram, sealed payloads over clear ones, same load, same
    /// run (the relay never reads a payload: it should be 1 within the noise).
    pub relay_cpu_ratio_sealed_to_clear: Option<f64>,
    pub targets: Vec<Target>,
}

/// The forwarder CPU per datagram of `run` over `base`'s (same load, same run), to three
/// significant figures.
fn cpu_per_datagram_ratio(run: &PathRun, base: &PathRun) -> Option<f64> {
    ratio(
        run.relay_cpu_us_per_datagram?,
        base.relay_cpu_us_per_datagram?,
    )
    .map(|v| round_sig(v, 3))
}

/// `forward` (and `floor`): each load size through a fresh relay, then (`sealed_too`)
/// through another with every frame sealed, then through the floor.
pub async fn forward(
    common: &Common,
    pair_counts: &[usize],
    load: &LoadOptions,
    with_floor: bool,
    sealed_too: bool,
    shaping: Option<&Shaping>,
) -> Result<Vec<ForwardRun>, BenchError> {
    let mut runs = Vec::new();
    for &pairs in pair_counts {
        let load = LoadOptions {
            pairs,
            ..load.clone()
        };
        eprintln!(
            "forward: {pairs} pairs through the relay for {:.0} s…",
            load.seconds
        );
        let relay = RelayProcess::start(&common.relay_options(pairs * 2 + 16))?;
        let (relay_run, _) = drive(Forwarder::Relay(&relay), common, &load, shaping).await?;
        drop(relay);
        let sealed_run = if sealed_too {
            eprintln!(
                "forward: {pairs} pairs through the relay, every frame sealed, for {:.0} s…",
                load.seconds
            );
            let mut sealed = load.clone();
            sealed.media.sealed = true;
            let relay = RelayProcess::start(&common.relay_options(pairs * 2 + 16))?;
            let (run, _) = drive(Forwarder::Relay(&relay), common, &sealed, shaping).await?;
            Some(run)
        } else {
            None
        };
        let sealed_ratio = sealed_run
            .as_ref()
            .and_then(|s| cpu_per_datagram_ratio(s, &relay_run));
        let floor_run = if with_floor {
            eprintln!(
                "forward: {pairs} pairs through the plain UDP floor for {:.0} s…",
                load.seconds
            );
            let max = (load.warmup + load.seconds).ceil() as u64 + 60;
            let mut floor = FloorProcess::start(common.socket_buffer, max)?;
            let (run, _) = drive(Forwarder::Floor(&mut floor), common, &load, None).await?;
            Some(run)
        } else {
            None
        };
        let cpu_ratio = floor_run
            .as_ref()
            .and_then(|f| cpu_per_datagram_ratio(&relay_run, f));
        let lat_ratio = floor_run.as_ref().and_then(|f| {
            ratio(relay_run.latency_ms_p99?, f.latency_ms_p99?).map(|v| round_sig(v, 3))
        });
        let mut targets = Vec::new();
        if shaping.is_none() {
            targets.push(Target::at_most(
                format!("relay CPU/datagram ÷ floor ({pairs} pairs)"),
                2.5,
                cpu_ratio,
            ));
            targets.push(Target::at_most(
                format!("latency p99 ms ({pairs} pairs)"),
                2.0,
                relay_run.latency_ms_p99,
            ));
            targets.push(Target::at_least(
                format!("delivered ratio ({pairs} pairs)"),
                0.999,
                relay_run.delivered_ratio,
            ));
        }
        runs.push(ForwardRun {
            relay: relay_run,
            floor: floor_run,
            relay_cpu_ratio_to_floor: cpu_ratio,
            relay_latency_ms_p99_over_floor: lat_ratio,
            sealed: sealed_run,
            relay_cpu_ratio_sealed_to_clear: sealed_ratio,
            targets,
        });
    }
    Ok(runs)
}

/// The standard columns of a media row.
pub fn media_table(title: &str, first: &str, rows: &[(String, &PathRun)]) -> Table {
    let mut t = Table::new(
        title,
        &[
            first,
            "pairs",
            "dg/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "delivered",
            "CPU µs/dg",
            "CPU s/M dg",
            "CPU s/GB",
            "cores",
            "RSS MB",
            "gen cores",
            "gen lag p99",
            "other cores",
        ],
    );
    for (label, r) in rows {
        t.row(vec![
            label.clone(),
            r.pairs.to_string(),
            format!("{:.0}", r.forwarded_per_s),
            num(r.latency_ms_p50, 2),
            num(r.latency_ms_p95, 2),
            num(r.latency_ms_p99, 2),
            num(r.latency_ms_max, 1),
            pct(r.delivered_ratio),
            num(r.relay_cpu_us_per_datagram, 2),
            num(r.relay_cpu_s_per_million_datagrams, 2),
            num(r.relay_cpu_s_per_gb, 1),
            num(Some(r.relay_cpu_cores), 2),
            num(Some(r.relay_rss_mb), 1),
            num(Some(r.loadgen_cpu_cores), 2),
            num(r.send_lag_ms_p99, 2),
            num(Some(r.other_cpu_cores), 2),
        ]);
    }
    t
}

/// Tables for `forward` runs.
pub fn forward_tables(runs: &[ForwardRun]) -> Vec<Table> {
    let mut rows = Vec::new();
    for r in runs {
        rows.push((
            format!(
                "relay{}",
                r.relay
                    .profile
                    .as_ref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            ),
            &r.relay,
        ));
        if let Some(sealed) = &r.sealed {
            rows.push(("relay, frames sealed".to_string(), sealed));
        }
        if let Some(f) = &r.floor {
            rows.push(("floor (plain UDP)".to_string(), f));
        }
    }
    let t = media_table(
        "Forwarding: one-way latency client → forwarder → client, CPU of the forwarder process",
        "forwarder",
        &rows,
    );
    let mut ratios = Table::new(
        "Relay against the floor (same load, same run)",
        &[
            "pairs",
            "CPU/dg ratio",
            "p99 ratio",
            "relay behind?",
            "floor behind?",
        ],
    );
    for r in runs {
        ratios.row(vec![
            r.relay.pairs.to_string(),
            num(r.relay_cpu_ratio_to_floor, 2),
            num(r.relay_latency_ms_p99_over_floor, 2),
            if r.relay.loadgen_behind {
                "generator behind".into()
            } else {
                "no".into()
            },
            r.floor.as_ref().map_or("-".into(), |f| {
                if f.loadgen_behind {
                    "generator behind".into()
                } else {
                    "no".into()
                }
            }),
        ]);
    }
    let mut tables = vec![t, ratios];
    if runs.iter().any(|r| r.sealed.is_some()) {
        let mut sealed = Table::new(
            "Relay CPU per datagram, frames sealed end to end against clear (same load, same run)",
            &["pairs", "clear µs/dg", "sealed µs/dg", "sealed ÷ clear"],
        );
        for r in runs {
            sealed.row(vec![
                r.relay.pairs.to_string(),
                num(r.relay.relay_cpu_us_per_datagram, 2),
                num(
                    r.sealed.as_ref().and_then(|s| s.relay_cpu_us_per_datagram),
                    2,
                ),
                num(r.relay_cpu_ratio_sealed_to_clear, 2),
            ]);
        }
        tables.push(sealed);
    }
    tables
}

/// `impaired`: the relay through each profile, one row each.
/// Media captured while the link carried less than the senders' floor, and the rest: how
/// much of each row's figures the link's fades account for.
pub fn fades_table(rows: &[(String, &PathRun)]) -> Table {
    let mut t = Table::new(
        "Fades: frames captured while the link carried less than the senders' floor (widened by its delay and queue), and the others",
        &[
            "profile",
            "frames in fades",
            "delivered",
            "delivered outside fades",
            "p95 ms",
            "p95 ms outside fades",
            "video frames paused",
        ],
    );
    for (label, r) in rows {
        t.row(vec![
            label.clone(),
            pct(r.frames_in_fades_share),
            pct(r.delivered_ratio),
            pct(r.delivered_ratio_outside_fades),
            num(r.latency_ms_p95, 1),
            num(r.latency_ms_p95_outside_fades, 1),
            pct(r.video_frames_paused_share),
        ]);
    }
    t
}

/// What [`impaired`] measured: a row per profile, and for adaptive senders on a profile
/// whose capacity is limited, how they followed it.
#[derive(Debug, Clone, Serialize)]
pub struct ImpairedRun {
    pub rows: Vec<PathRun>,
    pub adaptation: Vec<(String, Adaptation)>,
    pub targets: Vec<Target>,
}

/// Longer than any run through a profile: its timeline is read this far.
const MAX_PROFILE_RUN: Duration = Duration::from_secs(3600);

pub async fn impaired(
    common: &Common,
    profiles: &[String],
    load: &LoadOptions,
    both: bool,
) -> Result<ImpairedRun, BenchError> {
    let mut out = ImpairedRun {
        rows: Vec::new(),
        adaptation: Vec::new(),
        targets: Vec::new(),
    };
    for name in profiles {
        let profile = Profile::named(name).map_err(|e| BenchError::Setup(e.to_string()))?;
        let one_way_ms = profile.delay.as_secs_f64() * 1000.0;
        // A profile with its own handovers (`train`): when the new cells came, on the
        // samples' clock, for the settle figures.
        let handovers = profile.timeline.handover_times(MAX_PROFILE_RUN);
        let shaping = Shaping {
            name: name.clone(),
            profile,
            both,
            handovers: None,
        };
        eprintln!(
            "impaired: {} pairs through `{name}` for {:.0} s…",
            load.pairs, load.seconds
        );
        let relay = RelayProcess::start(&common.relay_options(load.pairs * 2 + 16))?;
        let (run, pairs) = drive(Forwarder::Relay(&relay), common, load, Some(&shaping)).await?;
        let legs = if both { 2.0 } else { 1.0 };
        // The issue's delivery and delay targets, per profile: how much later than the
        // profile's own delay media may arrive. On a walking link they are for senders that
        // adapt.
        let margin_ms = match name.as_str() {
            "cellular" => Some(60.0),
            "cellular-walk" if load.media.adaptive => Some(100.0),
            _ => None,
        };
        if let Some(margin) = margin_ms {
            out.targets.push(Target::at_least(
                format!("{name} delivered ratio"),
                0.97,
                run.delivered_ratio,
            ));
            out.targets.push(Target::at_most(
                format!("{name} latency p95 ms (profile delay + {margin:.0})"),
                one_way_ms * legs + margin,
                run.latency_ms_p95,
            ));
        }
        let rates: Vec<_> = pairs.into_iter().map(|p| p.rates).collect();
        if rates
            .iter()
            .any(|r| r.iter().any(|s| s.capacity_bps.is_some()))
        {
            let a = adaptation::analyse(
                &rates,
                &handovers,
                load.media.floor_kbps(),
                load.media.max_kbps(),
            );
            if name == "cellular-walk" {
                out.targets.push(adaptation::above_capacity_target(&a));
            }
            out.adaptation.push((name.clone(), a));
        }
        out.rows.push(run);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_json_has_the_keys_the_issue_asks_for() {
        let run = ForwardRun {
            relay: PathRun {
                pairs: 100,
                ..PathRun::default()
            },
            floor: Some(PathRun::default()),
            relay_cpu_ratio_to_floor: Some(2.0),
            relay_latency_ms_p99_over_floor: None,
            sealed: None,
            relay_cpu_ratio_sealed_to_clear: None,
            targets: vec![],
        };
        let v = serde_json::to_value(&run).expect("serializes");
        for key in [
            "pairs",
            "datagrams_forwarded",
            "latency_ms_p50",
            "latency_ms_p99",
            "delivered_ratio",
            "relay_cpu_us_per_datagram",
            "relay_rss_mb",
            "relay_cpu_ratio_to_floor",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["pairs"], 100);
        assert!(v["floor"].get("relay_cpu_us_per_datagram").is_some());
    }

    #[test]
    fn drop_counters_are_deltas() {
        let a = Some(serde_json::json!({"no_partner": 3, "send_failed": 1}));
        let b = Some(serde_json::json!({"no_partner": 5, "send_failed": 1, "new": 2}));
        assert_eq!(
            drops_delta(&a, &b),
            Some(serde_json::json!({"no_partner": 2, "send_failed": 0, "new": 2}))
        );
        assert_eq!(drops_delta(&None, &b), None);
    }
}
