//! `resume`: pairs in a call while one end of each loses its network for longer than the
//! QUIC idle timeout, so its connection dies and it must come back with its resume token
//! (as a phone does after a tunnel, or a browser that cannot migrate). For each outage:
//! the time from the network returning to media flowing again each way, and whether the
//! same partner (the same pairing) came back.
//!
//! Media here is a 50-packets-a-second audio-like stream each way: what matters is when
//! the first packet gets through, not the bitrate.

use super::process::RelayProcess;
use super::report::{num, Table};
use super::stats::{exact_summary, Summary};
use super::{BenchError, Common};
use crate::impair::{Profile, Shaper, ShaperConfig};
use duet_client::{Client, ConnectOptions};
use duet_proto::media::{peek_match_id, MediaHeader, Track};
use duet_proto::{ClientMsg, ServerMsg};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    pub pairs: usize,
    pub rounds: usize,
    pub outage_ms: u64,
    pub idle_timeout_ms: u64,
    pub outages: usize,
    pub resumed: usize,
    pub same_partner: usize,
    /// From the network returning to the first packet from the partner, on the end that
    /// lost its network.
    pub media_back_ms_moving: Summary,
    /// The same on the partner's side.
    pub media_back_ms_partner: Summary,
    /// The later of the two, per outage.
    pub media_back_ms: Summary,
    pub failures: Vec<String>,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A 20 ms media pump for one session, stamping each packet with its send time; returns
/// when `stop` is notified or sending fails.
fn pump(
    client: Arc<Mutex<Client>>,
    match_id: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for seq in 0u32.. {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            MediaHeader {
                match_id,
                track: Track::Audio,
                seq,
                frame: seq,
                frag_index: 0,
                frag_count: 1,
                keyframe: true,
                capture_us: now_us(),
                ref_frame: seq,
            }
            .write_datagram(&[0u8; 80], &mut buf);
            if client.lock().await.send_datagram(&buf).is_err() {
                return;
            }
        }
    })
}

/// Waits for the first datagram of pairing `match_id` on `conn` sent after `after_us`
/// (older ones were queued before the outage).
async fn first_media(
    conn: wtransport::Connection,
    match_id: u64,
    after_us: u64,
) -> Option<Instant> {
    loop {
        let d = conn.receive_datagram().await.ok()?;
        let p = d.payload();
        if peek_match_id(&p) != Some(match_id) {
            continue;
        }
        if MediaHeader::read(&p).is_ok_and(|(h, _)| h.capture_us >= after_us) {
            return Some(Instant::now());
        }
    }
}

async fn matched(c: &mut Client, patience: Duration) -> Result<u64, BenchError> {
    c.wait_for(patience, "Matched", |m| match m {
        ServerMsg::Matched(m) => Some(m.match_id),
        _ => None,
    })
    .await
    .map_err(|e| BenchError::Process(format!("pairing: {e}")))
}

/// Runs the `resume` scenario.
pub async fn run(
    common: &Common,
    pairs: usize,
    rounds: usize,
    outage: Duration,
) -> Result<ResumeReport, BenchError> {
    let idle = common.idle_timeout();
    eprintln!(
        "resume: {pairs} pairs, {rounds} outages of {outage:?} each (idle timeout {idle:?})…"
    );
    let mut opts = common.relay_options(pairs * 4 + 16);
    opts.extra_args.push("--resume-grace-s=30".into());
    let relay = RelayProcess::start(&opts)?;
    let shaper = Shaper::start(ShaperConfig::new(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| BenchError::Setup("address".into()))?,
        relay.quic,
        Profile::wifi(),
    ))
    .await
    .map_err(|e| BenchError::Setup(format!("shaper: {e}")))?;
    let patience = Duration::from_secs(20);
    let mut direct = ConnectOptions::new(format!("https://{}", relay.quic), Some(relay.cert_hash));
    direct.idle_timeout = idle;
    let mut via = direct.clone();
    via.relay = format!("https://{}", shaper.local_addr());

    // Pair them up one at a time so each moving end meets a direct partner.
    struct Pair {
        stays: Arc<Mutex<Client>>,
        stays_conn: wtransport::Connection,
        moves: Option<Client>,
        token: duet_proto::ResumeToken,
        match_id: u64,
        stop: Arc<AtomicBool>,
    }
    let mut set = Vec::new();
    for i in 0..pairs {
        let setup = BenchError::Process;
        let mut a = Client::connect(&direct)
            .await
            .map_err(|e| setup(e.to_string()))?;
        a.hello(&format!("stays{i}"), &[], None)
            .await
            .map_err(|e| setup(e.to_string()))?;
        a.wait_for(patience, "Queued", |m| {
            matches!(m, ServerMsg::Queued { .. }).then_some(())
        })
        .await
        .map_err(|e| setup(e.to_string()))?;
        let mut b = Client::connect(&via)
            .await
            .map_err(|e| setup(e.to_string()))?;
        let w = b
            .hello(&format!("moves{i}"), &[], None)
            .await
            .map_err(|e| setup(e.to_string()))?;
        let match_id = matched(&mut a, patience).await?;
        matched(&mut b, patience).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let stays_conn = a.connection().clone();
        let stays = Arc::new(Mutex::new(a));
        pump(stays.clone(), match_id, stop.clone());
        set.push(Pair {
            stays,
            stays_conn,
            moves: Some(b),
            token: w.resume_token,
            match_id,
            stop,
        });
    }

    let (mut moving, mut partner, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let (mut resumed, mut same, mut failures) = (0, 0, Vec::new());
    for round in 0..rounds {
        shaper.blackout(true);
        // Each moving end notices its connection die (idle timeout) and starts resuming.
        let mut tasks = Vec::new();
        for (i, p) in set.iter_mut().enumerate() {
            let Some(old) = p.moves.take() else {
                continue;
            };
            let (via, token, match_id) = (via.clone(), p.token, p.match_id);
            let name = format!("moves{i}");
            let stays_conn = p.stays_conn.clone();
            tasks.push((
                i,
                tokio::spawn(async move {
                    let mut old = old;
                    // The connection dies within the idle timeout.
                    while old.recv().await.is_ok() {}
                    drop(old);
                    let died_us = now_us();
                    let (mut c, w) =
                        duet_client::resume(&via, &name, token, Duration::from_secs(25))
                            .await
                            .map_err(|e| format!("pair {i}: resume failed: {e}"))?;
                    let again = matched(&mut c, Duration::from_secs(10))
                        .await
                        .map_err(|e| format!("pair {i}: {e}"))?;
                    let conn = c.connection().clone();
                    // Media both ways on the new connection.
                    let stop = Arc::new(AtomicBool::new(false));
                    let c = Arc::new(Mutex::new(c));
                    let pumping = pump(c.clone(), match_id, stop.clone());
                    let (heard, partner_heard) = tokio::join!(
                        first_media(conn, match_id, died_us),
                        first_media(stays_conn, match_id, died_us)
                    );
                    stop.store(true, Ordering::Relaxed);
                    let _ = pumping.await;
                    let c = Arc::try_unwrap(c).map_err(|_| "pump still running".to_string())?;
                    Ok::<_, String>((c.into_inner(), w, again == match_id, heard, partner_heard))
                }),
            ));
        }
        tokio::time::sleep(outage).await;
        shaper.blackout(false);
        let returned = Instant::now();
        for (i, t) in tasks {
            match t.await {
                Ok(Ok((client, w, kept, heard, partner_heard))) => {
                    if w.resumed {
                        resumed += 1;
                    }
                    if w.resumed && kept {
                        same += 1;
                    }
                    let ms = |t: Option<Instant>| {
                        t.map(|t| t.saturating_duration_since(returned).as_secs_f64() * 1000.0)
                    };
                    let (m, p) = (ms(heard), ms(partner_heard));
                    if let Some(m) = m {
                        moving.push(m);
                    }
                    if let Some(p) = p {
                        partner.push(p);
                    }
                    if let (Some(m), Some(p)) = (m, p) {
                        both.push(m.max(p));
                    }
                    set[i].token = w.resume_token;
                    set[i].moves = Some(client);
                }
                Ok(Err(e)) => failures.push(format!("round {round}: {e}")),
                Err(e) => failures.push(format!("round {round}: task: {e}")),
            }
        }
        // Let everything settle before the next outage.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for p in &set {
        p.stop.store(true, Ordering::Relaxed);
        let _ = p.stays.lock().await.send(&ClientMsg::Leave).await;
    }
    drop(set);
    drop(relay);
    Ok(ResumeReport {
        pairs,
        rounds,
        outage_ms: outage.as_millis() as u64,
        idle_timeout_ms: idle.as_millis() as u64,
        outages: pairs * rounds,
        resumed,
        same_partner: same,
        media_back_ms_moving: exact_summary(&moving),
        media_back_ms_partner: exact_summary(&partner),
        media_back_ms: exact_summary(&both),
        failures,
    })
}

pub fn tables(r: &ResumeReport) -> Vec<Table> {
    let mut t = Table::new(
        format!(
            "Resume: {} pairs × {} outages of {} ms (idle timeout {} ms): media back after the network returns",
            r.pairs, r.rounds, r.outage_ms, r.idle_timeout_ms
        ),
        &["media from the partner, seen by", "count", "p50 ms", "p95 ms", "max ms"],
    );
    for (name, s) in [
        ("the end that lost its network", &r.media_back_ms_moving),
        ("its partner", &r.media_back_ms_partner),
        ("both (the later of the two)", &r.media_back_ms),
    ] {
        t.row(vec![
            name.into(),
            s.count.to_string(),
            num(s.p50, 1),
            num(s.p95, 1),
            num(s.max, 1),
        ]);
    }
    let mut s = Table::new(
        "Same partner",
        &["outages", "resumed", "same partner", "failures"],
    );
    s.row(vec![
        r.outages.to_string(),
        r.resumed.to_string(),
        r.same_partner.to_string(),
        r.failures.len().to_string(),
    ]);
    vec![t, s]
}
