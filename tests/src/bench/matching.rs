//! `match`: how fast strangers are paired, and how fast Next gets you someone new.
//!
//! * **Burst:** N clients connect at once. Each records connect → `Welcome` (handshake
//!   included) and connect → `Matched`.
//! * **Stream:** N clients (made odd, so one is always left waiting) connect at a steady
//!   rate. For each pairing, the client whose arrival completed it measures connect →
//!   `Matched` with a partner already waiting: the relay's own matching latency, which
//!   is what the target is about. Every client's time (including waiting for someone to
//!   arrive) is reported too.
//! * **Next:** the stream's pairs, one after another, press Next. The one client left
//!   waiting is paired with the presser at once; the presser measures Next → first media
//!   datagram from the new partner. Every client sends one datagram the moment it sees
//!   `Matched` (as a real client sends a keyframe), so the figure is the relay's round
//!   trip, not a frame timer. The presser's old partner becomes the next one waiting.

use super::load::{self, datagram_match, hello_datagram};
use super::process::RelayProcess;
use super::report::{num, Table, Target};
use super::stats::{exact_summary, round3, Summary};
use super::{BenchError, Common};
use duet_client::{Client, ClientEndpoint};
use duet_proto::{ClientMsg, ServerMsg};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Longest any one client may take from connect to `Matched`, and the longest wait for
/// any one event the orchestrator expects.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait after a Next for the presser's first datagram from the new partner.
const NEXT_TIMEOUT: Duration = Duration::from_secs(5);

/// Events queued from clients to the orchestrator: two per client plus one per Next.
const EVENT_QUEUE: usize = 16_384;

#[derive(Debug)]
enum Event {
    Matched {
        idx: usize,
        match_id: u64,
        started: Instant,
        connected: Instant,
        welcomed: Instant,
        at: Instant,
    },
    FirstMedia {
        idx: usize,
        since_next: Duration,
        since_next_to_matched: Option<Duration>,
    },
    Failed {
        idx: usize,
        why: String,
    },
}

/// One simulated person: connect at `start_at`, Hello, then react to the relay and to
/// Next commands until stopped.
#[allow(clippy::too_many_arguments)]
async fn person(
    idx: usize,
    endpoint: Arc<ClientEndpoint>,
    opts: duet_client::ConnectOptions,
    start_at: Instant,
    mut next: mpsc::Receiver<()>,
    events: mpsc::Sender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::time::sleep_until(start_at).await;
    let started = Instant::now();
    let fail = |why: String| Event::Failed { idx, why };
    let mut client =
        match tokio::time::timeout(EVENT_TIMEOUT, Client::connect_on(&endpoint, &opts)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return drop(events.send(fail(e.to_string())).await),
            Err(_) => return drop(events.send(fail("connect timed out".into())).await),
        };
    let connected = Instant::now();
    if let Err(e) = client.hello(&format!("m{idx}"), &[], None).await {
        return drop(events.send(fail(e.to_string())).await);
    }
    let welcomed = Instant::now();
    let conn = client.connection().clone();
    let mut buf = Vec::with_capacity(256);
    let mut current: Option<u64> = None;
    let mut first = true;
    // Set while a Next waits for the new partner's first datagram: when Next was pressed,
    // the pairing it left, and when the new `Matched` came.
    let mut pending: Option<(Instant, Option<u64>, Option<Instant>)> = None;
    // A datagram of a pairing whose `Matched` has not been read yet (it can overtake it).
    let mut early: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            cmd = next.recv() => {
                if cmd.is_none() { continue; }
                pending = Some((Instant::now(), current, None));
                early = None;
                if client.send(&ClientMsg::Next { match_id: current }).await.is_err() { break; }
            }
            msg = client.recv() => match msg {
                Ok(ServerMsg::Matched(m)) => {
                    let at = Instant::now();
                    current = Some(m.match_id);
                    hello_datagram(m.match_id, &mut buf);
                    let _ = conn.send_datagram(&buf);
                    if first {
                        first = false;
                        let _ = events.send(Event::Matched { idx, match_id: m.match_id, started, connected, welcomed, at }).await;
                    }
                    if let Some(p) = pending.as_mut() {
                        p.2 = Some(at);
                        if let Some((mid, t)) = early.take().filter(|(mid, _)| *mid == m.match_id) {
                            let _ = mid;
                            let since_next = t - p.0;
                            let _ = events.send(Event::FirstMedia { idx, since_next, since_next_to_matched: Some(at - p.0) }).await;
                            pending = None;
                        }
                    }
                }
                Ok(ServerMsg::PeerLeft { .. }) => current = None,
                Ok(_) => {}
                Err(e) => { let _ = events.send(fail(e.to_string())).await; break; }
            },
            dg = conn.receive_datagram() => {
                let Ok(dg) = dg else { break };
                let Some((pressed, old, matched_at)) = pending else { continue };
                let Some(mid) = datagram_match(&dg.payload()) else { continue };
                if Some(mid) == old { continue; }
                let now = Instant::now();
                if Some(mid) == current {
                    let _ = events.send(Event::FirstMedia { idx, since_next: now - pressed, since_next_to_matched: matched_at.map(|m| m - pressed) }).await;
                    pending = None;
                } else if early.is_none() {
                    early = Some((mid, now));
                }
            }
        }
    }
    client.close().await;
}

/// Figures of the `match` scenario.
#[derive(Debug, Clone, Serialize)]
pub struct MatchReport {
    pub clients_burst: usize,
    pub clients_stream: usize,
    pub stream_rate_per_s: f64,
    /// Burst: every client, connect → session up (QUIC + WebTransport handshake), →
    /// Welcome (plus the control stream and Hello) and → Matched.
    pub burst_handshake_ms: Summary,
    pub burst_connect_to_welcome_ms: Summary,
    pub burst_connect_to_matched_ms: Summary,
    /// Stream: the client completing each pairing, connect → Matched.
    pub connect_to_matched_ms: Summary,
    /// Stream: every client, connect → Matched (includes waiting for someone to arrive).
    pub stream_connect_to_matched_all_ms: Summary,
    pub stream_connect_to_welcome_ms: Summary,
    pub stream_handshake_ms: Summary,
    /// Next → first datagram from the new partner, for the presser.
    pub next_to_first_datagram_ms: Summary,
    /// Next → `Matched` with the new partner, for the presser.
    pub next_to_matched_ms: Summary,
    pub failures: Vec<String>,
    pub targets: Vec<Target>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Phase {
    matched: Vec<Event>,
    failures: Vec<String>,
    senders: Vec<mpsc::Sender<()>>,
    events: mpsc::Receiver<Event>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts `n` people, person i at `t0 + i × spacing`, and waits until `expect_matched` of
/// them are matched (or failed, or the time is up).
async fn phase(
    relay: &RelayProcess,
    common: &Common,
    n: usize,
    spacing: Duration,
    expect_matched: usize,
) -> Result<Phase, BenchError> {
    let idle = common.idle_timeout();
    let per = common.sessions_per_endpoint.max(1);
    let endpoints = load::endpoints(relay.cert_hash, common, n)?;
    let opts = load::connect_options(relay.quic, relay.cert_hash, idle);
    let (ev_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let (stop, stop_rx) = watch::channel(false);
    let t0 = Instant::now() + Duration::from_millis(20);
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (tx, rx) = mpsc::channel(4);
        senders.push(tx);
        let endpoint = endpoints[i / per].clone();
        tasks.push(tokio::spawn(person(
            i,
            endpoint,
            opts.clone(),
            t0 + spacing * i as u32,
            rx,
            ev_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(ev_tx);
    let deadline = t0 + spacing * n as u32 + EVENT_TIMEOUT;
    let mut matched = Vec::new();
    let mut failures = Vec::new();
    while matched.len() < expect_matched && matched.len() + failures.len() < n {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e @ Event::Matched { .. })) => matched.push(e),
            Ok(Some(Event::Failed { idx, why })) => failures.push(format!("client {idx}: {why}")),
            Ok(Some(Event::FirstMedia { .. })) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if matched.len() < expect_matched {
        failures.push(format!(
            "{} of {expect_matched} expected clients were matched in time",
            matched.len()
        ));
    }
    Ok(Phase {
        matched,
        failures,
        senders,
        events,
        stop,
        tasks,
    })
}

async fn end(phase: Phase) {
    let _ = phase.stop.send(true);
    for t in phase.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
}

/// Runs the `match` scenario.
pub async fn run(
    common: &Common,
    clients: usize,
    rate: f64,
    nexts: usize,
) -> Result<MatchReport, BenchError> {
    let clients = clients.max(2) & !1; // an even burst: everyone gets a partner
    let relay = RelayProcess::start(&common.relay_options(clients * 2 + 16))?;

    eprintln!("match: {clients} clients at once…");
    let burst = phase(&relay, common, clients, Duration::ZERO, clients).await?;
    let mut welcome = Vec::new();
    let mut handshake = Vec::new();
    let mut matched_all = Vec::new();
    for e in &burst.matched {
        if let Event::Matched {
            started,
            connected,
            welcomed,
            at,
            ..
        } = e
        {
            handshake.push(ms(*connected - *started));
            welcome.push(ms(*welcomed - *started));
            matched_all.push(ms(*at - *started));
        }
    }
    let mut failures = burst.failures.clone();
    end(burst).await;

    let stream_n = clients | 1; // odd: one always waiting, for the Next chain
    let spacing = Duration::from_secs_f64(1.0 / rate.max(0.1));
    eprintln!("match: {stream_n} clients arriving at {rate}/s…");
    let mut stream = phase(&relay, common, stream_n, spacing, stream_n - 1).await?;
    failures.extend(stream.failures.iter().cloned());
    let mut by_match: HashMap<u64, Vec<(usize, Instant, Instant, Instant)>> = HashMap::new();
    let mut s_welcome = Vec::new();
    let mut s_handshake = Vec::new();
    let mut s_all = Vec::new();
    for e in &stream.matched {
        if let Event::Matched {
            idx,
            match_id,
            started,
            connected,
            welcomed,
            at,
        } = e
        {
            s_handshake.push(ms(*connected - *started));
            s_welcome.push(ms(*welcomed - *started));
            s_all.push(ms(*at - *started));
            by_match
                .entry(*match_id)
                .or_default()
                .push((*idx, *started, *welcomed, *at));
        }
    }
    // The later arrival of each pairing found its partner waiting.
    let mut completing = Vec::new();
    let mut pairs: Vec<(Instant, usize, usize)> = Vec::new();
    for members in by_match.values() {
        if let [a, b] = members.as_slice() {
            let later = if a.1 >= b.1 { a } else { b };
            completing.push(ms(later.3 - later.1));
            pairs.push((later.3, a.0, b.0));
        }
    }
    pairs.sort_by_key(|p| p.0);

    eprintln!(
        "match: {} Next presses, one after another…",
        nexts.min(pairs.len())
    );
    let mut next_media = Vec::new();
    let mut next_matched = Vec::new();
    for &(_, presser, _) in pairs.iter().take(nexts) {
        let Some(tx) = stream.senders.get(presser) else {
            continue;
        };
        if tx.send(()).await.is_err() {
            failures.push(format!("client {presser} is gone before its Next"));
            continue;
        }
        let deadline = Instant::now() + NEXT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, stream.events.recv()).await {
                Ok(Some(Event::FirstMedia {
                    idx,
                    since_next,
                    since_next_to_matched,
                })) if idx == presser => {
                    next_media.push(ms(since_next));
                    if let Some(m) = since_next_to_matched {
                        next_matched.push(ms(m));
                    }
                    break;
                }
                Ok(Some(Event::Failed { idx, why })) => {
                    failures.push(format!("client {idx}: {why}"))
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    failures.push(format!("client {presser}: no media from a new partner within {NEXT_TIMEOUT:?} of Next"));
                    break;
                }
            }
        }
    }
    end(stream).await;
    drop(relay);

    let connect_to_matched = exact_summary(&completing);
    let next_summary = exact_summary(&next_media);
    let targets = vec![
        Target::at_most(
            "match p50 ms (connect → Matched)",
            10.0,
            connect_to_matched.p50,
        ),
        Target::at_most(
            "match p99 ms (connect → Matched)",
            50.0,
            connect_to_matched.p99,
        ),
        Target::at_most("Next → first datagram p50 ms", 5.0, next_summary.p50),
    ];
    failures.truncate(20);
    Ok(MatchReport {
        clients_burst: clients,
        clients_stream: stream_n,
        stream_rate_per_s: round3(rate),
        burst_handshake_ms: exact_summary(&handshake),
        burst_connect_to_welcome_ms: exact_summary(&welcome),
        burst_connect_to_matched_ms: exact_summary(&matched_all),
        connect_to_matched_ms: connect_to_matched,
        stream_connect_to_matched_all_ms: exact_summary(&s_all),
        stream_connect_to_welcome_ms: exact_summary(&s_welcome),
        stream_handshake_ms: exact_summary(&s_handshake),
        next_to_first_datagram_ms: next_summary,
        next_to_matched_ms: exact_summary(&next_matched),
        failures,
        targets,
    })
}

/// The `match` table.
pub fn table(r: &MatchReport) -> Table {
    let mut t = Table::new(
        format!(
            "Matching: {} clients at once, then {} arriving at {}/s",
            r.clients_burst, r.clients_stream, r.stream_rate_per_s
        ),
        &["measure", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"],
    );
    for (name, s) in [
        ("burst: connect → session up", &r.burst_handshake_ms),
        ("burst: connect → Welcome", &r.burst_connect_to_welcome_ms),
        ("burst: connect → Matched", &r.burst_connect_to_matched_ms),
        ("stream: connect → session up", &r.stream_handshake_ms),
        ("stream: connect → Welcome", &r.stream_connect_to_welcome_ms),
        (
            "stream: connect → Matched (partner waiting)",
            &r.connect_to_matched_ms,
        ),
        (
            "stream: connect → Matched (everyone)",
            &r.stream_connect_to_matched_all_ms,
        ),
        ("Next → Matched", &r.next_to_matched_ms),
        (
            "Next → first datagram from new partner",
            &r.next_to_first_datagram_ms,
        ),
    ] {
        t.row(vec![
            name.into(),
            s.count.to_string(),
            num(s.p50, 2),
            num(s.p95, 2),
            num(s.p99, 2),
            num(s.max, 2),
        ]);
    }
    t
}
