//! `soak`: a churning population against one relay for N minutes, to show that nothing
//! builds up: memory, sessions, file descriptors and threads are read at the start and at
//! the end, both times with the population gone quiet.
//!
//! Each person is a task that loops until the deadline: join (connect, `Hello`), then
//! random actions a second or few apart: Next (naming its pairing), Leave and come back,
//! a chat line, quit and join again as a new session, close without a word, and bad input
//! (garbage datagrams, oversized datagrams, datagrams for a pairing it does not have,
//! malformed or oversized control frames, a second `Hello`). While paired it sends a small
//! audio-like datagram every 40 ms and counts what arrives for its pairing. Some people
//! reach the relay through a UDP shaper (one of a few "cut groups"); a cutter blacks one
//! group out for longer than the idle timeout every so often, so their connections die
//! without a close and they come back with their resume token.
//!
//! Phases: warm-up (the same churn, so allocator pools and caches reach their working
//! size), quiet (everyone has left; wait until `/status` shows no session and the fd count
//! is stable, and then past the relay's idle heap trims), the **start** reading, the run,
//! quiet again, the **end** reading. Readings:
//! `VmRSS` from `/proc/<pid>/status`, entries of `/proc/<pid>/fd` and `/proc/<pid>/task`,
//! and `/status` (sessions, waiting, pairs, and any other gauge it shows).
//!
//! A benchmark, not a test: it prints figures and the targets they are checked against,
//! and fails only if it could not run. Every loop is bounded by the deadline, every wait
//! has a timeout.

use super::load;
use super::process::RelayProcess;
use super::procfs;
use super::report::{num, Table, Target};
use super::stats::round3;
use super::{BenchError, Common};
use crate::impair::{Profile, Shaper, ShaperConfig, ShaperHandle};
use duet_client::{Client, ClientEndpoint, ConnectOptions};
use duet_proto::limits::MAX_MEDIA_DATAGRAM_BYTES;
use duet_proto::media::{peek_match_id, MediaHeader, Track};
use duet_proto::{ClientMsg, ServerMsg, Welcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// Longest a join (connect and `Welcome`) may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a polite close or a chat write may take (a stalled peer must not hold a person).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// After a bad control frame the relay must close the session; if it has not within this,
/// the person drops the connection and counts it.
const EXPECTED_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Media while paired: one small datagram this often (an audio-like stream; the soak is
/// about churn, not bitrate).
const MEDIA_EVERY: Duration = Duration::from_millis(40);
const MEDIA_BYTES: usize = 80;

/// How long quiet may take to come: the resume grace, the idle timeout and QUIC's
/// draining all have to pass.
const QUIET_SLACK: Duration = Duration::from_secs(30);

/// Polling period while waiting for quiet.
const QUIET_POLL: Duration = Duration::from_millis(250);

/// Polls in a row with the same fd count that make "stable" (2 s).
const STABLE_POLLS: usize = 8;

/// Quiet must last this long before a reading: past the relay's last idle trim
/// (`duet_relay::memory::IDLE_TRIMS_AT_S`), so both readings see the heap the relay keeps
/// when idle and not one caught between trims. A leak survives a trim; free pages do not.
fn idle_before_reading() -> Duration {
    let last = duet_relay::memory::IDLE_TRIMS_AT_S
        .last()
        .copied()
        .unwrap_or(0);
    Duration::from_secs(last + 4)
}

/// Most failure messages kept for the report.
const MAX_FAILURES_KEPT: usize = 20;

/// Most samples kept over the run (one every `sample_every`; 10 s × 2 000 is over 5 h).
const MAX_SAMPLES: usize = 2_000;

/// Largest `/metrics` body parsed for gauges (the real one is a few KB).
const MAX_METRICS_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub population: usize,
    pub run: Duration,
    pub warmup: Duration,
    /// Shaped groups that are cut in turn (0: nobody is cut).
    pub cut_groups: usize,
    pub cut_every: Duration,
    pub resume_grace_s: u64,
    pub sample_every: Duration,
}

/// What the people did, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Joins,
    JoinFailures,
    Matched,
    PeerLeft,
    Nexts,
    Leaves,
    ChatSent,
    ChatReceived,
    Quits,
    Abandons,
    DatagramsSent,
    DatagramsReceived,
    DatagramsOtherPairing,
    GarbageDatagrams,
    OversizedDatagrams,
    StrayDatagrams,
    MalformedFrames,
    OversizedFrames,
    SecondHellos,
    ClosedAfterFatal,
    NotClosedAfterFatal,
    Cuts,
    Lost,
    Resumed,
    ResumeRefused,
    ResumeFailed,
}

const COUNTS: [(Count, &str); 26] = [
    (Count::Joins, "joins"),
    (Count::JoinFailures, "join_failures"),
    (Count::Matched, "matched"),
    (Count::PeerLeft, "peer_left"),
    (Count::Nexts, "nexts"),
    (Count::Leaves, "leaves"),
    (Count::ChatSent, "chat_sent"),
    (Count::ChatReceived, "chat_received"),
    (Count::Quits, "quits"),
    (Count::Abandons, "abandons"),
    (Count::DatagramsSent, "datagrams_sent"),
    (Count::DatagramsReceived, "datagrams_received"),
    (Count::DatagramsOtherPairing, "datagrams_other_pairing"),
    (Count::GarbageDatagrams, "garbage_datagrams"),
    (Count::OversizedDatagrams, "oversized_datagrams"),
    (Count::StrayDatagrams, "stray_datagrams"),
    (Count::MalformedFrames, "malformed_frames"),
    (Count::OversizedFrames, "oversized_frames"),
    (Count::SecondHellos, "second_hellos"),
    (Count::ClosedAfterFatal, "closed_after_fatal_error"),
    (Count::NotClosedAfterFatal, "not_closed_after_fatal_error"),
    (Count::Cuts, "cuts"),
    (Count::Lost, "connections_lost"),
    (Count::Resumed, "resumed"),
    (Count::ResumeRefused, "resume_refused"),
    (Count::ResumeFailed, "resume_failed"),
];

/// What every person shares: where to connect, and the tallies.
struct Shared {
    endpoints: Vec<Arc<ClientEndpoint>>,
    per_endpoint: usize,
    /// Route 0 is direct; route `g + 1` goes through cut group `g`'s shaper.
    routes: Vec<ConnectOptions>,
    resume_give_up: Duration,
    counts: [AtomicU64; COUNTS.len()],
    errors: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn add(&self, c: Count, n: u64) {
        if let Some(i) = COUNTS.iter().position(|(k, _)| *k == c) {
            self.counts[i].fetch_add(n, Relaxed);
        }
    }

    fn error(&self, code: &str) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *e.entry(code.to_string()).or_default() += 1;
    }

    fn failure(&self, what: String) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() < MAX_FAILURES_KEPT {
            f.push(what);
        }
    }

    fn tallies(&self) -> BTreeMap<String, u64> {
        COUNTS
            .iter()
            .zip(&self.counts)
            .map(|((_, name), v)| ((*name).to_string(), v.load(Relaxed)))
            .collect()
    }
}

/// One reading of the relay process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reading {
    /// Seconds since the relay started.
    pub at_s: f64,
    pub rss_mib: f64,
    /// `VmRSS` split: anonymous (what the relay allocated) and file-backed (its binary's
    /// pages, read in as code paths first run).
    pub rss_anon_mib: Option<f64>,
    pub rss_file_mib: Option<f64>,
    pub fds: Option<u64>,
    pub threads: Option<u64>,
    pub sessions: Option<u64>,
    pub waiting: Option<u64>,
    pub pairs: Option<u64>,
    /// Every gauge `/metrics` reports (name with its labels), empty when it has none.
    pub gauges: BTreeMap<String, f64>,
    /// Anonymous memory per mapping (`/proc/<pid>/smaps`), for where growth is; the report
    /// keeps only the changes.
    #[serde(skip)]
    pub anon_mappings: Vec<procfs::Mapping>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub population: usize,
    pub run_s: f64,
    pub warmup_s: f64,
    pub cut_groups: usize,
    pub cut_every_s: f64,
    pub idle_timeout_ms: u64,
    pub resume_grace_s: u64,
    /// After warm-up, with the population gone quiet.
    pub start: Reading,
    /// After the run, with the population gone quiet.
    pub end: Reading,
    /// Whether `/status` showed no session (and the fds settled) before each reading.
    pub quiet_at_start: bool,
    pub quiet_at_end: bool,
    /// From the population's last close to the end reading (quiet, then idle past the
    /// relay's heap trims), seconds.
    pub quiet_after_s: f64,
    pub rss_growth_mib: f64,
    pub rss_growth_pct: Option<f64>,
    /// The growth of each part of `VmRSS`, MiB and % of its start: anonymous memory (what
    /// the relay allocated) and file-backed pages (its binary, paged in on first use).
    pub anon_growth_mib: Option<f64>,
    pub anon_growth_pct: Option<f64>,
    pub file_growth_mib: Option<f64>,
    /// Where the anonymous memory changed between the readings: mapping and KiB, largest
    /// change first (the heap's main arena is `[heap]`, a thread's arena or stack is an
    /// `anon` mapping).
    pub anon_changes_kib: Vec<(String, i64)>,
    pub rss_peak_mib: f64,
    pub fd_growth: Option<i64>,
    pub thread_growth: Option<i64>,
    pub sessions_left: Option<u64>,
    /// The run's readings, one every `sample_every` (the population active).
    pub samples: Vec<Reading>,
    /// CPU over the run, in cores: the relay, this generator, and everything else on the
    /// machine (other people's work on a shared machine).
    pub relay_cpu_cores: f64,
    pub generator_cpu_cores: f64,
    pub other_cpu_cores: Option<f64>,
    pub activity: BTreeMap<String, u64>,
    /// Error codes the relay sent, by name.
    pub errors_received: BTreeMap<String, u64>,
    pub status_start: Value,
    pub status_end: Value,
    pub failures: Vec<String>,
    pub targets: Vec<Target>,
}

fn count_dir(path: &str) -> Option<u64> {
    std::fs::read_dir(path).ok().map(|d| d.count() as u64)
}

fn gauge(status: &Value, key: &str) -> Option<u64> {
    status.get(key).and_then(Value::as_u64)
}

/// The gauges of a Prometheus text exposition: every sample of a metric declared
/// `# TYPE <name> gauge`, keyed by name and labels as written.
pub fn parse_gauges(text: &str) -> BTreeMap<String, f64> {
    let mut gauges = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            if let (Some(name), Some("gauge")) = (w.next(), w.next()) {
                gauges.insert(name.to_string());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.trim().rsplit_once(' ') else {
            continue;
        };
        let name = key.split('{').next().unwrap_or(key);
        if let (true, Ok(v)) = (gauges.contains(name), value.parse::<f64>()) {
            out.insert(key.trim().to_string(), v);
        }
    }
    out
}

async fn reading(relay: &RelayProcess, started: Instant) -> (Reading, Value) {
    let pid = relay.pid_str();
    let status = relay.status().await.unwrap_or(Value::Null);
    // The relay may serve /metrics elsewhere (an admin listener); then there are none.
    let gauges = match super::process::http_get(relay.http, "/metrics").await {
        Ok(text) if text.len() <= MAX_METRICS_BYTES => parse_gauges(&text),
        _ => BTreeMap::new(),
    };
    let split = procfs::rss_split_mib(&pid);
    let r = Reading {
        at_s: round3(started.elapsed().as_secs_f64()),
        rss_mib: round3(procfs::rss_mib(&pid).map_or(0.0, |x| x.0)),
        rss_anon_mib: split.map(|s| round3(s.0)),
        rss_file_mib: split.map(|s| round3(s.1)),
        fds: count_dir(&format!("/proc/{pid}/fd")),
        threads: count_dir(&format!("/proc/{pid}/task")),
        sessions: gauge(&status, "sessions"),
        waiting: gauge(&status, "waiting"),
        pairs: gauge(&status, "pairs"),
        gauges,
        anon_mappings: procfs::anon_by_mapping(&pid).unwrap_or_default(),
    };
    (r, status)
}

/// Waits until the relay shows no session, nobody waiting and no pair, and its fd count
/// is at most `fds_target` (or, without one, unchanged for [`STABLE_POLLS`] polls).
/// Returns whether that happened within `patience`.
async fn settle(relay: &RelayProcess, fds_target: Option<u64>, patience: Duration) -> bool {
    let pid = relay.pid_str();
    let deadline = Instant::now() + patience + idle_before_reading();
    let mut last_fds = None;
    let mut same = 0usize;
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        // The relay publishes the sizes of its longer-lived maps every second (`held`):
        // with nobody connected, no session is known to the engine and no resume token is
        // live. Waiting for that also makes the reading's gauges fresh.
        let empty = relay.status().await.ok().is_some_and(|s| {
            let held = |map: &str| s["held"].get(map).and_then(Value::as_u64).unwrap_or(0);
            gauge(&s, "sessions") == Some(0)
                && gauge(&s, "waiting").unwrap_or(0) == 0
                && gauge(&s, "pairs").unwrap_or(0) == 0
                && held("match_members") == 0
                && held("resume_tokens") == 0
        });
        let fds = count_dir(&format!("/proc/{pid}/fd"));
        if fds.is_some() && fds == last_fds {
            same += 1;
        } else {
            same = 0;
        }
        last_fds = fds;
        let fds_ok = match fds_target {
            Some(t) => fds.is_some_and(|f| f <= t) || same >= STABLE_POLLS * 2,
            None => same >= STABLE_POLLS,
        };
        if empty && fds_ok {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= idle_before_reading() {
                return true;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(QUIET_POLL).await;
    }
    false
}

/// How a session of a person ended.
enum End {
    /// The deadline came: leave politely and stop.
    Deadline,
    /// The person quit (or abandoned the call); a new session follows.
    Quit,
    /// The relay closed the session after a fatal error (the person's bad input).
    Refused,
    /// The connection died: resume with the token.
    Lost(String),
}

fn audio(match_id: u64, seq: u32, buf: &mut Vec<u8>) {
    MediaHeader {
        match_id,
        track: Track::Audio,
        seq,
        frame: seq,
        frag_index: 0,
        frag_count: 1,
        keyframe: true,
        capture_us: load::now_us(),
        ref_frame: seq,
    }
    .write_datagram(&[0u8; MEDIA_BYTES], buf);
}

async fn join(
    shared: &Shared,
    endpoint: &ClientEndpoint,
    route: &ConnectOptions,
    name: &str,
) -> Result<(Client, Welcome), String> {
    let open = async {
        let mut c = Client::connect_on(endpoint, route).await?;
        let w = c.hello(name, &[], None).await?;
        Ok::<_, duet_client::ClientError>((c, w))
    };
    let r = match tokio::time::timeout(JOIN_TIMEOUT, open).await {
        Ok(Ok(x)) => Ok(x),
        Ok(Err(e)) => Err(format!("join: {e}")),
        Err(_) => Err("join: timed out".to_string()),
    };
    shared.add(
        if r.is_ok() {
            Count::Joins
        } else {
            Count::JoinFailures
        },
        1,
    );
    r
}

/// One person, until `stop_at`.
async fn person(shared: Arc<Shared>, i: usize, seed: u64, stop_at: Instant) {
    let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let endpoint = shared.endpoints[(i / shared.per_endpoint) % shared.endpoints.len()].clone();
    let route = shared.routes[i % shared.routes.len()].clone();
    let name = format!("soak{i}");
    // Spread the arrivals over a second.
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
    while Instant::now() < stop_at {
        let (mut client, mut welcome) = match join(&shared, &endpoint, &route, &name).await {
            Ok(x) => x,
            Err(e) => {
                shared.failure(e);
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1000))).await;
                continue;
            }
        };
        loop {
            match live(&shared, &mut client, &mut rng, stop_at).await {
                End::Deadline => {
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, client.close()).await;
                    return;
                }
                End::Quit | End::Refused => break,
                End::Lost(why) => {
                    shared.add(Count::Lost, 1);
                    drop(client);
                    if Instant::now() >= stop_at {
                        return;
                    }
                    let give_up = shared.resume_give_up;
                    match duet_client::resume(&route, &name, welcome.resume_token, give_up).await {
                        Ok((c, w)) if w.resumed => {
                            shared.add(Count::Resumed, 1);
                            (client, welcome) = (c, w);
                        }
                        Ok((c, _)) => {
                            // A fresh session instead of the old one: the relay forgot it.
                            shared.add(Count::ResumeRefused, 1);
                            shared.failure(format!("{name}: resume gave a new session ({why})"));
                            let _ = tokio::time::timeout(WRITE_TIMEOUT, c.close()).await;
                            break;
                        }
                        Err(duet_client::ClientError::Server(e)) => {
                            shared.add(Count::ResumeRefused, 1);
                            shared.error(e.code.name());
                            shared.failure(format!(
                                "{name}: resume after {why}: refused: {}",
                                e.message
                            ));
                            break;
                        }
                        Err(e) => {
                            shared.add(Count::ResumeFailed, 1);
                            shared.failure(format!("{name}: resume after {why}: {e}"));
                            break;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1000))).await;
    }
}

/// One session's life: answer the relay, send media while paired, act now and then.
async fn live(shared: &Shared, client: &mut Client, rng: &mut StdRng, stop_at: Instant) -> End {
    let conn = client.connection().clone();
    let mut match_id: Option<u64> = None;
    let mut left = false;
    let mut expect_close: Option<Instant> = None;
    let mut seq = 0u32;
    let mut buf = Vec::with_capacity(MAX_MEDIA_DATAGRAM_BYTES + 64);
    let mut media = tokio::time::interval(MEDIA_EVERY);
    media.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut next_action = Instant::now() + Duration::from_millis(rng.random_range(500..4000));
    loop {
        let close_by = expect_close.unwrap_or(stop_at);
        tokio::select! {
            msg = client.recv() => match msg {
                Ok(ServerMsg::Matched(m)) => {
                    shared.add(Count::Matched, 1);
                    match_id = Some(m.match_id);
                }
                Ok(ServerMsg::PeerLeft { .. }) => {
                    shared.add(Count::PeerLeft, 1);
                    match_id = None;
                }
                Ok(ServerMsg::Error(e)) => {
                    shared.error(e.code.name());
                    if e.fatal {
                        // The relay ends this session (a bad frame, a second Hello): no resume.
                        expect_close.get_or_insert(Instant::now() + EXPECTED_CLOSE_TIMEOUT);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if expect_close.is_some() {
                        shared.add(Count::ClosedAfterFatal, 1);
                        return End::Refused;
                    }
                    return End::Lost(e.to_string());
                }
            },
            d = conn.receive_datagram() => match d {
                Ok(d) => {
                    let ours = match_id.is_some() && peek_match_id(&d.payload()) == match_id;
                    shared.add(if ours { Count::DatagramsReceived } else { Count::DatagramsOtherPairing }, 1);
                }
                // The control stream reports the end (with the relay's reason).
                Err(_) => {
                    if expect_close.is_some() {
                        shared.add(Count::ClosedAfterFatal, 1);
                        return End::Refused;
                    }
                    return End::Lost("datagrams ended".into());
                }
            },
            _ = media.tick() => {
                while client.try_recv_chat().is_some() {
                    shared.add(Count::ChatReceived, 1);
                }
                if let (Some(m), None) = (match_id, expect_close) {
                    audio(m, seq, &mut buf);
                    seq = seq.wrapping_add(1);
                    if client.send_datagram(&buf).is_ok() {
                        shared.add(Count::DatagramsSent, 1);
                    }
                }
            }
            _ = tokio::time::sleep_until(next_action), if expect_close.is_none() => {
                next_action = Instant::now() + Duration::from_millis(rng.random_range(500..4000));
                if left {
                    left = false;
                    if client.send(&ClientMsg::Next { match_id: None }).await.is_ok() {
                        shared.add(Count::Nexts, 1);
                    }
                    continue;
                }
                match rng.random_range(0..100u32) {
                    0..=34 => {
                        if client.send(&ClientMsg::Next { match_id }).await.is_ok() {
                            shared.add(Count::Nexts, 1);
                        }
                        match_id = None;
                    }
                    35..=44 => {
                        if client.send(&ClientMsg::Leave).await.is_ok() {
                            shared.add(Count::Leaves, 1);
                        }
                        match_id = None;
                        left = true;
                    }
                    45..=59 => {
                        if let Some(m) = match_id {
                            let line = format!("line {seq} from a soak");
                            let sent = tokio::time::timeout(WRITE_TIMEOUT, client.send_chat(m, &line)).await;
                            if matches!(sent, Ok(Ok(()))) {
                                shared.add(Count::ChatSent, 1);
                            }
                        }
                    }
                    60..=66 => {
                        shared.add(Count::Quits, 1);
                        if Instant::now() < stop_at {
                            let _ = tokio::time::timeout(WRITE_TIMEOUT, client.send(&ClientMsg::Leave)).await;
                        }
                        conn.close(wtransport::VarInt::from_u32(0), b"bye");
                        return End::Quit;
                    }
                    67..=69 => {
                        // Closes the connection without Leave (a tab closed mid-call).
                        shared.add(Count::Abandons, 1);
                        conn.close(wtransport::VarInt::from_u32(0), b"");
                        return End::Quit;
                    }
                    70..=75 => {
                        let len = rng.random_range(1..200);
                        buf.clear();
                        buf.extend((0..len).map(|_| rng.random::<u8>()));
                        if client.send_datagram(&buf).is_ok() {
                            shared.add(Count::GarbageDatagrams, 1);
                        }
                    }
                    76..=79 => {
                        audio(match_id.unwrap_or(0), seq, &mut buf);
                        buf.resize(rng.random_range(MAX_MEDIA_DATAGRAM_BYTES + 1..=MAX_MEDIA_DATAGRAM_BYTES + 50), 0);
                        if client.send_datagram(&buf).is_ok() {
                            shared.add(Count::OversizedDatagrams, 1);
                        }
                    }
                    80..=83 => {
                        audio(rng.random::<u64>(), seq, &mut buf);
                        if client.send_datagram(&buf).is_ok() {
                            shared.add(Count::StrayDatagrams, 1);
                        }
                    }
                    84..=85 => {
                        // A well-framed body that is no message (an unknown variant).
                        let mut frame = vec![0, 3, 0xff, 0xff, 0x7f];
                        frame.extend((0..rng.random_range(0..8)).map(|_| rng.random::<u8>()));
                        let len = (frame.len() - 2) as u16;
                        frame[..2].copy_from_slice(&len.to_be_bytes());
                        if client.write_control(&frame).await.is_ok() {
                            shared.add(Count::MalformedFrames, 1);
                            expect_close = Some(Instant::now() + EXPECTED_CLOSE_TIMEOUT);
                        }
                    }
                    86 => {
                        // A length prefix over the frame limit.
                        let sent = client.write_control(&[0xff, 0xff, 0, 0, 0]).await;
                        if sent.is_ok() {
                            shared.add(Count::OversizedFrames, 1);
                            expect_close = Some(Instant::now() + EXPECTED_CLOSE_TIMEOUT);
                        }
                    }
                    87..=88 => {
                        let hello = ClientMsg::Hello(duet_proto::Hello {
                            version: duet_proto::PROTOCOL_VERSION,
                            name: "again".into(),
                            interests: vec![],
                            resume: None,
                            visitor: None,
                            media: duet_client::native_caps(),
                        });
                        if client.send(&hello).await.is_ok() {
                            shared.add(Count::SecondHellos, 1);
                        }
                    }
                    _ => {} // just stay in the call
                }
            }
            _ = tokio::time::sleep_until(close_by) => {
                if expect_close.is_some() {
                    shared.add(Count::NotClosedAfterFatal, 1);
                    conn.close(wtransport::VarInt::from_u32(0), b"");
                    return End::Refused;
                }
                return End::Deadline;
            }
        }
    }
}

/// Blacks out one cut group after another, each for longer than the idle timeout.
async fn cutter(
    shared: Arc<Shared>,
    shapers: Arc<Vec<ShaperHandle>>,
    every: Duration,
    outage: Duration,
    stop_at: Instant,
) {
    let mut k = 0usize;
    loop {
        let at = Instant::now() + every;
        // A cut that would outlast the run would only delay the quiet phase.
        if shapers.is_empty() || at + outage >= stop_at {
            return;
        }
        tokio::time::sleep_until(at).await;
        shapers[k % shapers.len()].blackout_for(outage);
        shared.add(Count::Cuts, 1);
        k += 1;
    }
}

/// Runs the whole population until `stop_at`; returns when every person has left.
async fn churn(
    shared: &Arc<Shared>,
    shapers: &Arc<Vec<ShaperHandle>>,
    o: &SoakOptions,
    outage: Duration,
    seed: u64,
    stop_at: Instant,
) {
    let mut people = JoinSet::new();
    for i in 0..o.population {
        people.spawn(person(shared.clone(), i, seed, stop_at));
    }
    let cuts = tokio::spawn(cutter(
        shared.clone(),
        shapers.clone(),
        o.cut_every,
        outage,
        stop_at,
    ));
    // Everyone stops at the deadline; a resume or join in flight then ends within its
    // own timeout.
    let limit = stop_at + shared.resume_give_up + JOIN_TIMEOUT + WRITE_TIMEOUT;
    while tokio::time::timeout_at(limit, people.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
    people.abort_all();
    cuts.abort();
}

/// Runs the `soak` scenario.
pub async fn run(common: &Common, o: &SoakOptions) -> Result<SoakReport, BenchError> {
    let idle = common.idle_timeout();
    let mut opts = common.relay_options(o.population * 4 + 64);
    opts.extra_args
        .push(format!("--resume-grace-s={}", o.resume_grace_s));
    let relay = RelayProcess::start(&opts)?;
    let started = Instant::now();
    let pid = relay.pid_str();
    let mut shapers = Vec::new();
    let mut routes = vec![load::connect_options(relay.quic, relay.cert_hash, idle)];
    for g in 0..o.cut_groups {
        let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let s = Shaper::start(
            ShaperConfig::new(listen, relay.quic, Profile::default())
                .with_seed(common.seed + g as u64),
        )
        .await?;
        routes.push(load::connect_options(s.local_addr(), relay.cert_hash, idle));
        shapers.push(s);
    }
    let shapers = Arc::new(shapers);
    let shared = Arc::new(Shared {
        endpoints: load::endpoints(relay.cert_hash, common, o.population)?,
        per_endpoint: common.sessions_per_endpoint.max(1),
        routes,
        resume_give_up: Duration::from_secs(o.resume_grace_s) + idle,
        counts: std::array::from_fn(|_| AtomicU64::new(0)),
        errors: Mutex::new(BTreeMap::new()),
        failures: Mutex::new(Vec::new()),
    });
    // Down for longer than the idle timeout, so both ends give the connection up.
    let outage = idle + Duration::from_millis(1000);
    let patience = Duration::from_secs(o.resume_grace_s) + idle + QUIET_SLACK;

    eprintln!(
        "soak: {} people, warm-up {:?}, then {:?} (idle timeout {idle:?}, resume grace {} s, {} cut groups)…",
        o.population, o.warmup, o.run, o.resume_grace_s, o.cut_groups
    );
    churn(
        &shared,
        &shapers,
        o,
        outage,
        common.seed,
        Instant::now() + o.warmup,
    )
    .await;
    let quiet_at_start = settle(&relay, None, patience).await;
    let (start, status_start) = reading(&relay, started).await;
    let warm_tallies = shared.tallies();
    eprintln!(
        "soak: start: {:.1} MiB, {:?} fds, {:?} threads; running…",
        start.rss_mib, start.fds, start.threads
    );

    let cpu0 = procfs::cpu(&pid).unwrap_or_default();
    let me0 = procfs::cpu("self").unwrap_or_default();
    let busy0 = procfs::machine_busy_s();
    let run_started = Instant::now();
    let stop_at = run_started + o.run;
    let mut samples = Vec::new();
    {
        let population = churn(&shared, &shapers, o, outage, common.seed + 1, stop_at);
        tokio::pin!(population);
        let mut tick = tokio::time::interval(o.sample_every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = &mut population => break,
                _ = tick.tick() => {
                    if samples.len() < MAX_SAMPLES {
                        samples.push(reading(&relay, started).await.0);
                    }
                }
            }
        }
    }
    let run_s = run_started.elapsed().as_secs_f64();
    let cpu1 = procfs::cpu(&pid).unwrap_or_default();
    let me1 = procfs::cpu("self").unwrap_or_default();
    let busy1 = procfs::machine_busy_s();
    let ended = Instant::now();
    let quiet_at_end = settle(&relay, start.fds, patience).await;
    let quiet_after_s = round3(ended.elapsed().as_secs_f64());
    let (end, status_end) = reading(&relay, started).await;
    let rss_peak_mib = round3(procfs::rss_mib(&pid).map_or(0.0, |x| x.1));
    drop(shapers);
    drop(relay);

    let relay_cpu = cpu0.until(&cpu1).total_s / run_s.max(1e-3);
    let me_cpu = me0.until(&me1).total_s / run_s.max(1e-3);
    let other = match (busy0, busy1) {
        (Some(a), Some(b)) => Some(((b - a) / run_s.max(1e-3) - relay_cpu - me_cpu).max(0.0)),
        _ => None,
    };
    let rss_growth_mib = round3(end.rss_mib - start.rss_mib);
    let rss_growth_pct =
        (start.rss_mib > 0.0).then(|| round3(rss_growth_mib / start.rss_mib * 100.0));
    let anon_growth_mib = start
        .rss_anon_mib
        .zip(end.rss_anon_mib)
        .map(|(a, b)| round3(b - a));
    let anon_growth_pct = start
        .rss_anon_mib
        .zip(anon_growth_mib)
        .filter(|(a, _)| *a > 0.0)
        .map(|(a, g)| round3(g / a * 100.0));
    let file_growth_mib = start
        .rss_file_mib
        .zip(end.rss_file_mib)
        .map(|(a, b)| round3(b - a));
    let anon_changes_kib = procfs::anon_changes(&start.anon_mappings, &end.anon_mappings);
    let diff = |a: Option<u64>, b: Option<u64>| Some(b? as i64 - a? as i64);
    let fd_growth = diff(start.fds, end.fds);
    let thread_growth = diff(start.threads, end.threads);
    let targets = vec![
        Target::at_most("relay RSS growth, %", 1.0, rss_growth_pct),
        Target::at_most(
            "sessions left at the end",
            0.0,
            end.sessions.map(|s| s as f64),
        ),
        Target::at_most("fd growth", 0.0, fd_growth.map(|g| g as f64)),
    ];
    // Activity of the measured run only (the warm-up's is subtracted).
    let mut activity = shared.tallies();
    for (k, v) in activity.iter_mut() {
        *v = v.saturating_sub(warm_tallies.get(k).copied().unwrap_or(0));
    }
    let errors_received = shared
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let failures = shared
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(SoakReport {
        population: o.population,
        run_s: round3(run_s),
        warmup_s: round3(o.warmup.as_secs_f64()),
        cut_groups: o.cut_groups,
        cut_every_s: round3(o.cut_every.as_secs_f64()),
        idle_timeout_ms: idle.as_millis() as u64,
        resume_grace_s: o.resume_grace_s,
        start,
        quiet_at_start,
        quiet_at_end,
        quiet_after_s,
        rss_growth_mib,
        rss_growth_pct,
        anon_growth_mib,
        anon_growth_pct,
        file_growth_mib,
        anon_changes_kib,
        rss_peak_mib,
        fd_growth,
        thread_growth,
        sessions_left: end.sessions,
        end,
        samples,
        relay_cpu_cores: round3(relay_cpu),
        generator_cpu_cores: round3(me_cpu),
        other_cpu_cores: other.map(round3),
        activity,
        errors_received,
        status_start,
        status_end,
        failures,
        targets,
    })
}

/// How many mappings the report lists under "where the anonymous memory changed".
const ANON_CHANGES_SHOWN: usize = 8;

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

pub fn tables(r: &SoakReport) -> Vec<Table> {
    let mut t = Table::new(
        format!(
            "Soak: {} people churning for {:.1} min (after {:.0} s warm-up); readings with the population quiet",
            r.population,
            r.run_s / 60.0,
            r.warmup_s
        ),
        &[
            "",
            "RSS MiB",
            "anon MiB",
            "file MiB",
            "fds",
            "threads",
            "sessions",
            "waiting",
            "pairs",
        ],
    );
    let row = |label: &str, x: &Reading| {
        vec![
            label.to_string(),
            num(Some(x.rss_mib), 2),
            num(x.rss_anon_mib, 2),
            num(x.rss_file_mib, 2),
            opt(x.fds),
            opt(x.threads),
            opt(x.sessions),
            opt(x.waiting),
            opt(x.pairs),
        ]
    };
    t.row(row("start", &r.start));
    t.row(row("end", &r.end));
    let signed = |v: Option<i64>| v.map_or("-".into(), |v| format!("{v:+}"));
    t.row(vec![
        "growth".to_string(),
        format!(
            "{:+.2} ({})",
            r.rss_growth_mib,
            r.rss_growth_pct.map_or("-".into(), |p| format!("{p:+.2}%"))
        ),
        format!(
            "{} ({})",
            r.anon_growth_mib.map_or("-".into(), |g| format!("{g:+.2}")),
            r.anon_growth_pct
                .map_or("-".into(), |p| format!("{p:+.2}%"))
        ),
        r.file_growth_mib.map_or("-".into(), |g| format!("{g:+.2}")),
        signed(r.fd_growth),
        signed(r.thread_growth),
    ]);

    let mut w = Table::new(
        "Where the anonymous memory changed between the readings (largest changes)",
        &["mapping", "KiB"],
    );
    for (label, kib) in r.anon_changes_kib.iter().take(ANON_CHANGES_SHOWN) {
        w.row(vec![label.clone(), format!("{kib:+}")]);
    }

    let mut m = Table::new(
        "Relay gauges from /metrics, start and end (both quiet)",
        &["gauge", "start", "end"],
    );
    let mut names: Vec<&String> = r.start.gauges.keys().chain(r.end.gauges.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let cell = |x: &Reading| num(x.gauges.get(name).copied(), 0);
        m.row(vec![name.clone(), cell(&r.start), cell(&r.end)]);
    }

    let mut a = Table::new(
        format!(
            "Soak activity (measured run; peak RSS {:.1} MiB; end reading {:.1} s after the last close; CPU cores: relay {:.2}, generator {:.2}, rest of the machine {})",
            r.rss_peak_mib,
            r.quiet_after_s,
            r.relay_cpu_cores,
            r.generator_cpu_cores,
            num(r.other_cpu_cores, 2)
        ),
        &["what", "count"],
    );
    for (k, v) in &r.activity {
        a.row(vec![k.clone(), v.to_string()]);
    }
    for (k, v) in &r.errors_received {
        a.row(vec![format!("error received: {k}"), v.to_string()]);
    }
    vec![t, w, m, a, super::report::targets_table(&r.targets)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_from_the_exposition_and_counters_are_not() {
        let text = "# HELP duet_sessions Sessions open now.\n\
                    # TYPE duet_sessions gauge\n\
                    duet_sessions 3\n\
                    # TYPE duet_nexts counter\n\
                    duet_nexts 120\n\
                    # TYPE duet_parked gauge\n\
                    duet_parked{reason=\"lost\"} 2\n\
                    duet_parked{reason=\"draining\"} 0\n\
                    garbage line\n";
        let g = parse_gauges(text);
        assert_eq!(g.get("duet_sessions"), Some(&3.0));
        assert_eq!(g.get("duet_parked{reason=\"lost\"}"), Some(&2.0));
        assert_eq!(g.get("duet_parked{reason=\"draining\"}"), Some(&0.0));
        assert!(!g.contains_key("duet_nexts"));
        assert_eq!(g.len(), 3);
        assert!(parse_gauges("").is_empty());
    }
}
