//! `handover`: pairs in a call while one end of each changes networks over and over
//! (Wi-Fi ↔ cellular through the shaper: a 300 ms blackout, a new source port toward the
//! relay, the other network's profile). For each handover, each side's media gap is the
//! longest time without a whole frame from the partner around it. The session survived if
//! its connection never ended; the pairing survived if nobody was re-matched, left or
//! reported reconnecting.

use super::forward::{drive, Forwarder, LoadOptions, PathRun, Shaping};
use super::process::RelayProcess;
use super::report::{num, Table};
use super::stats::{exact_summary, Summary};
use super::{BenchError, Common};
use crate::impair::Profile;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct HandoverReport {
    pub pairs: usize,
    pub handover_every_s: f64,
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
    #[serde(flatten)]
    pub media: PathRun,
}

/// Runs the `handover` scenario.
pub async fn run(
    common: &Common,
    load: &LoadOptions,
    every: Duration,
) -> Result<HandoverReport, BenchError> {
    let shaping = Shaping {
        name: format!("wifi ↔ cellular every {:.1} s", every.as_secs_f64()),
        profile: Profile::wifi().with_periodic_handover(every),
        both: false,
        handover_every: Some(every),
    };
    eprintln!(
        "handover: {} pairs, a handover every {every:?}, for {:.0} s…",
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
            let Some(g) = r.gaps.as_ref() else {
                return Vec::new();
            };
            let settle = (g.every / 2).min(Duration::from_secs(2));
            g.max_gap
                .iter()
                .enumerate()
                .filter(|(k, _)| {
                    g.until
                        .is_some_and(|u| g.first + g.every * *k as u32 + settle <= u)
                })
                .filter_map(|(_, gap)| gap.map(|d| d.as_secs_f64() * 1000.0))
                .collect()
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
    let all: Vec<f64> = moving.iter().chain(partner.iter()).copied().collect();
    Ok(HandoverReport {
        pairs: load.pairs,
        handover_every_s: every.as_secs_f64(),
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
        media,
    })
}

pub fn tables(r: &HandoverReport) -> Vec<Table> {
    let mut gaps = Table::new(
        format!(
            "Handover: {} pairs, one end of each moving Wi-Fi ↔ cellular every {:.1} s ({} handovers)",
            r.pairs, r.handover_every_s, r.handovers
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
    ]);
    vec![gaps, survival]
}
