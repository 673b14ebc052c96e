//! `handover`: pairs in a call while one end of each changes networks over and over
//! (Wi-Fi ↔ cellular through the shaper: a 300 ms blackout, a new source port or a new
//! source address toward the relay, the other network's profile). The other network is
//! `cellular` (a fixed 3 Mbit/s), `cellular-walk` (a rate that swings between 0.3 and
//! 10 Mbit/s), or the moving end rides a `train` (long fades, a new cell and address every
//! 20–60 s). For each handover, each side's media gap is the longest time without a whole
//! frame from the partner that began around it (from 250 ms before it to half the time to
//! the next, at most 2 s, after it: a fade seconds later is the network's, not the move's). The session survived if its connection never ended;
//! the pairing survived if nobody was re-matched, left or reported reconnecting.
//!
//! Senders adapt by default (`duet_client::quality`, the rules the web client uses): the
//! report then says how long the moving end's video took to settle at what each new path
//! carries, and the longest time it sent more than its link's capacity.

use super::adaptation::{self, Adaptation};
use super::forward::{drive, Forwarder, LoadOptions, PathRun, Shaping};
use super::process::RelayProcess;
use super::report::{num, targets_table, Table, Target};
use super::stats::{exact_summary, Summary};
use super::{BenchError, Common};
use crate::impair::{AddressChange, Profile, Timeline};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct HandoverReport {
    pub pairs: usize,
    /// Seconds between handovers (the mean, for `train`).
    pub handover_every_s: f64,
    /// What each handover changes: `port` or `ip`.
    pub change: AddressChange,
    /// The network moved to: `cellular`, `cellular-walk` or `train`.
    pub network: String,
    /// The other network's one-way delay, for the targets.
    pub network_one_way_ms: f64,
    pub handovers: usize,
    /// Gap seen by the end that changed networks (media from its partner).
    pub gap_ms_moving_side: Summary,
    /// Gap seen by the partner (media from the end that moved).
    pub gap_ms_partner_side: Summary,
    pub gap_ms_all: Summary,
    pub sessions: usize,
    pub sessions_survived: usize,
    pub pairings_survived: usize,
    pub rematches: u64,
    pub peer_left: u64,
    pub peer_reconnecting: u64,
    /// Whether senders adapted their video rate (otherwise fixed at the spec's).
    pub adaptive: bool,
    /// The video rate senders start at, and the highest they may reach, kbit/s.
    pub video_start_kbps: u32,
    pub video_max_kbps: u32,
    /// With adaptive senders: how the moving ends followed their links.
    pub adaptation: Option<Adaptation>,
    pub targets: Vec<Target>,
    #[serde(flatten)]
    pub media: PathRun,
}

/// The targets for this run: every call and pairing kept, no re-match, and each
/// side's media back within the blackout plus two round trips of the new path; on the
/// time-varying networks also whole frames delivered and capture-to-arrival delay.
fn targets(r: &HandoverReport) -> Vec<Target> {
    let rtt = 2.0 * r.network_one_way_ms;
    let blackout = crate::impair::HANDOVER_BLACKOUT.as_secs_f64() * 1000.0;
    let kept = |n: usize, of: usize| (of > 0).then(|| 100.0 * n as f64 / of as f64);
    let mut t = vec![
        Target::at_least(
            "calls kept, %",
            100.0,
            kept(r.sessions_survived, r.sessions),
        ),
        Target::at_least(
            "pairings kept, %",
            100.0,
            kept(r.pairings_survived, r.pairs),
        ),
        Target::at_most("re-matches", 0.0, Some(r.rematches as f64)),
        Target::at_most(
            format!("media gap p95, ms (blackout {blackout:.0} + 2 × RTT {rtt:.0})"),
            blackout + 2.0 * rtt,
            r.gap_ms_all.p95,
        ),
    ];
    if r.network != "cellular" {
        t.push(Target::at_least(
            "whole video frames delivered, %",
            97.0,
            r.media.delivered_ratio.map(|d| d * 100.0),
        ));
        t.push(Target::at_most(
            format!(
                "capture → arrival p95, ms (one way {:.0} + 100)",
                r.network_one_way_ms
            ),
            r.network_one_way_ms + 100.0,
            r.media.latency_ms_p95,
        ));
    }
    if let Some(a) = r.adaptation.as_ref().filter(|_| r.network != "cellular") {
        t.push(adaptation::above_capacity_target(a));
    }
    t
}

/// The networks a handover may move to.
pub const NETWORKS: [&str; 3] = ["cellular", "cellular-walk", "train"];

/// What the moving end's shaper runs: its profile (with the handover timeline, up to
/// `horizon`) and a name.
fn moving_profile(
    network: &str,
    every: Duration,
    change: AddressChange,
    horizon: Duration,
) -> Result<(Profile, String), BenchError> {
    let (profile, name) = match network {
        "cellular" => (
            Profile::wifi().with_periodic_handover(every),
            format!("wifi ↔ cellular every {:.1} s", every.as_secs_f64()),
        ),
        "cellular-walk" => {
            // Each visit is to a new cell with a walk of its own (seeds 1, 2, …): replaying
            // the start of one walk every time would replay its fades every time too.
            let timeline = Timeline::alternating_handover(
                every,
                Profile::wifi(),
                |k| Profile::cellular_walk_seeded(1 + k),
                horizon,
            );
            (
                Profile::wifi().with_timeline(timeline),
                format!("wifi ↔ cellular-walk every {:.1} s", every.as_secs_f64()),
            )
        }
        "train" => (
            Profile::train(),
            "train (a new cell every 20–60 s)".to_owned(),
        ),
        other => {
            return Err(BenchError::Setup(format!(
                "unknown network {other:?}; known: {}",
                NETWORKS.join(", ")
            )))
        }
    };
    let timeline = profile.timeline.clone().with_change(change);
    Ok((
        profile.with_timeline(timeline),
        format!("{name}, new {change}"),
    ))
}

/// Runs the `handover` scenario.
pub async fn run(
    common: &Common,
    load: &LoadOptions,
    every: Duration,
    change: AddressChange,
    network: &str,
) -> Result<HandoverReport, BenchError> {
    // Every handover up to a little past the end (setup takes a few seconds more).
    let horizon = Duration::from_secs_f64(load.warmup + load.seconds + 60.0);
    let (profile, name) = moving_profile(network, every, change, horizon)?;
    let times = profile.timeline.handover_times(horizon);
    let mean_every = match (times.first(), times.last()) {
        (Some(a), Some(b)) if times.len() > 1 => (*b - *a) / (times.len() as u32 - 1),
        _ => every,
    };
    let one_way_ms = match network {
        "train" => profile.delay,
        _ => Profile::cellular().delay,
    }
    .as_secs_f64()
        * 1000.0;
    let shaping = Shaping {
        name: name.clone(),
        profile,
        both: false,
        handovers: Some(times.clone()),
    };
    eprintln!(
        "handover: {} pairs, {name}, for {:.0} s…",
        load.pairs,
        load.warmup + load.seconds
    );
    let relay = RelayProcess::start(&common.relay_options(load.pairs * 2 + 16))?;
    let (media, pairs) = drive(Forwarder::Relay(&relay), common, load, Some(&shaping)).await?;
    let (mut moving, mut partner) = (Vec::new(), Vec::new());
    let (mut survived, mut pair_ok, mut rematches, mut left, mut reconnecting) =
        (0, 0, 0u64, 0u64, 0u64);
    let mut handovers = 0;
    for p in &pairs {
        let (a, b) = (&p.shaped, &p.partner);
        // A handover counts once media had time to come back before sending stopped.
        let windows = |r: &super::load::RecvReport| -> Vec<f64> {
            r.gaps.as_ref().map_or_else(Vec::new, |g| {
                g.complete()
                    .iter()
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .collect()
            })
        };
        let (wa, wb) = (windows(a), windows(b));
        handovers += wa.len().max(wb.len());
        moving.extend(wa);
        partner.extend(wb);
        for r in [a, b] {
            survived += usize::from(!r.lost);
            rematches += u64::from(r.matches);
            left += u64::from(r.peer_left);
            reconnecting += u64::from(r.peer_reconnecting);
        }
        pair_ok += usize::from(
            !a.lost && !b.lost && a.matches + b.matches + a.peer_left + b.peer_left == 0,
        );
    }
    drop(relay);
    let adaptation = load.media.adaptive.then(|| {
        let rates: Vec<_> = pairs.iter().map(|p| p.rates.clone()).collect();
        adaptation::analyse(
            &rates,
            &times,
            load.media.floor_kbps(),
            load.media.max_kbps(),
        )
    });
    let all: Vec<f64> = moving.iter().chain(partner.iter()).copied().collect();
    let mut report = HandoverReport {
        pairs: load.pairs,
        handover_every_s: mean_every.as_secs_f64(),
        change,
        network: network.to_owned(),
        network_one_way_ms: one_way_ms,
        handovers,
        gap_ms_moving_side: exact_summary(&moving),
        gap_ms_partner_side: exact_summary(&partner),
        gap_ms_all: exact_summary(&all),
        sessions: pairs.len() * 2,
        sessions_survived: survived,
        pairings_survived: pair_ok,
        rematches,
        peer_left: left,
        peer_reconnecting: reconnecting,
        adaptive: load.media.adaptive,
        video_start_kbps: load.media.video_kbps,
        video_max_kbps: load.media.max_kbps(),
        adaptation,
        targets: Vec::new(),
        media,
    };
    report.targets = targets(&report);
    Ok(report)
}

pub fn tables(r: &HandoverReport) -> Vec<Table> {
    let mut gaps = Table::new(
        format!(
            "Handover: {} pairs, one end of each moving ({}), a new {} each time, every {:.1} s on average ({} handovers)",
            r.pairs, r.network, r.change, r.handover_every_s, r.handovers
        ),
        &["media gap seen by", "count", "p50 ms", "p95 ms", "max ms"],
    );
    for (name, s) in [
        ("the moving end", &r.gap_ms_moving_side),
        ("its partner", &r.gap_ms_partner_side),
        ("either", &r.gap_ms_all),
    ] {
        gaps.row(vec![
            name.into(),
            s.count.to_string(),
            num(s.p50, 1),
            num(s.p95, 1),
            num(s.max, 1),
        ]);
    }
    let mut survival = Table::new(
        "Survival",
        &[
            "sessions",
            "survived",
            "pairs",
            "pairings kept",
            "re-matches",
            "PeerLeft",
            "PeerReconnecting",
            "delivered",
            "video frames paused",
        ],
    );
    survival.row(vec![
        r.sessions.to_string(),
        r.sessions_survived.to_string(),
        r.pairs.to_string(),
        r.pairings_survived.to_string(),
        r.rematches.to_string(),
        r.peer_left.to_string(),
        r.peer_reconnecting.to_string(),
        super::report::pct(r.media.delivered_ratio),
        super::report::pct(r.media.video_frames_paused_share),
    ]);
    let mut tables = vec![gaps, survival];
    if let Some(a) = &r.adaptation {
        tables.push(adaptation::table(
            &[(r.network.clone(), a)],
            r.video_start_kbps,
            r.video_max_kbps,
        ));
    }
    tables.push(targets_table(&r.targets));
    tables
}
