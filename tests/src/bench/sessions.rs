//! `sessions`: how many idle sessions the relay holds, and what each costs in memory.
//!
//! K sessions connect (a bounded number of handshakes at a time, many sessions per client
//! endpoint), say Hello and stay: paired or queued, sending nothing but QUIC keep-alives.
//! The relay's resident memory is read before the first session, at every tenth of the
//! way, and after a hold of a few keep-alive intervals; memory per session is the growth
//! divided by the sessions held (and, less sensitive to start-up allocations, the slope
//! between the first tenth and the end).

use super::load;
use super::process::RelayProcess;
use super::procfs;
use super::report::{num, Table, Target};
use super::stats::{ratio, round3};
use super::{BenchError, Common};
use duet_client::Client;
use serde::Serialize;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Longest one session may take to connect and get `Welcome`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Failures in a row after which the ramp stops: the relay (or the machine) is at its
/// limit, and the figure to report is how many were held.
const MAX_FAILURES_IN_A_ROW: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct SessionsReport {
    pub sessions_asked: usize,
    /// Sessions the relay reported open after the hold.
    pub sessions_held: u64,
    /// Most sessions `/status` showed at once.
    pub most_sessions_seen: u64,
    pub connect_failures: usize,
    pub ramp_seconds: f64,
    pub hold_seconds: f64,
    pub relay_rss_mb_before: f64,
    pub relay_rss_mb_after: f64,
    pub relay_rss_peak_mb: f64,
    /// (rss − rss before) ÷ sessions held.
    pub relay_rss_kib_per_session: Option<f64>,
    /// Slope of RSS against sessions from a tenth of the way to the end.
    pub relay_rss_kib_per_session_slope: Option<f64>,
    pub relay_cpu_s_ramp: f64,
    pub relay_cpu_cores_idle: f64,
    pub samples: Vec<(u64, f64)>,
    pub errors: Vec<String>,
    pub targets: Vec<Target>,
}

/// Runs the `sessions` scenario.
pub async fn run(
    common: &Common,
    k: usize,
    concurrency: usize,
    hold: Duration,
) -> Result<SessionsReport, BenchError> {
    let relay = RelayProcess::start(&common.relay_options(k + 64))?;
    let pid = relay.pid_str();
    let rss = || procfs::rss_mib(&pid).map_or((0.0, 0.0), |x| x);
    let idle = common.idle_timeout();
    let per = common.sessions_per_endpoint.max(1);
    let endpoints = load::endpoints(relay.cert_hash, common, k)?;
    let opts = load::connect_options(relay.quic, relay.cert_hash, idle);
    let before = rss().0;
    let cpu0 = procfs::cpu(&pid).unwrap_or_default();
    let mut samples = vec![(0u64, round3(before))];
    let mut held: Vec<Client> = Vec::with_capacity(k);
    let mut errors = Vec::new();
    let mut failures = 0usize;
    let mut in_a_row = 0usize;
    let mut most = 0u64;
    let started = Instant::now();
    let step = (k / 10).max(1);
    let mut next_sample = step;
    let mut tasks = JoinSet::new();
    let mut launched = 0usize;
    eprintln!("sessions: opening {k} sessions, {concurrency} handshakes at a time…");
    while (launched < k || !tasks.is_empty()) && in_a_row < MAX_FAILURES_IN_A_ROW {
        while launched < k && tasks.len() < concurrency.max(1) {
            let endpoint = endpoints[launched / per].clone();
            let opts = opts.clone();
            let i = launched;
            tasks.spawn(async move {
                let open = async {
                    let mut c = Client::connect_on(&endpoint, &opts).await?;
                    c.hello(&format!("s{i}"), &[], None).await?;
                    Ok::<_, duet_client::ClientError>(c)
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".to_string()),
                }
            });
            launched += 1;
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        match done {
            Ok(Ok(c)) => {
                held.push(c);
                in_a_row = 0;
            }
            Ok(Err(e)) => {
                failures += 1;
                in_a_row += 1;
                if errors.len() < 10 {
                    errors.push(e);
                }
            }
            Err(e) => {
                failures += 1;
                in_a_row += 1;
                if errors.len() < 10 {
                    errors.push(e.to_string());
                }
            }
        }
        if held.len() >= next_sample {
            next_sample += step;
            samples.push((held.len() as u64, round3(rss().0)));
            if let Ok(s) = relay.status().await {
                most = most.max(s.get("sessions").and_then(|v| v.as_u64()).unwrap_or(0));
            }
        }
    }
    tasks.abort_all();
    let ramp = started.elapsed();
    let cpu1 = procfs::cpu(&pid).unwrap_or_default();
    eprintln!(
        "sessions: {} open after {:.1} s; holding for {hold:?}…",
        held.len(),
        ramp.as_secs_f64()
    );
    // Holding is the measurement: keep-alives flow and idle timers run meanwhile.
    tokio::time::sleep(hold).await;
    let cpu2 = procfs::cpu(&pid).unwrap_or_default();
    let status = relay.status().await?;
    let sessions_held = status.get("sessions").and_then(|v| v.as_u64()).unwrap_or(0);
    most = most.max(sessions_held);
    let (after, peak) = rss();
    samples.push((sessions_held, round3(after)));
    let per_session = ratio((after - before) * 1024.0, sessions_held as f64).map(round3);
    let slope = match samples.iter().find(|(n, _)| *n >= step as u64) {
        Some(&(n0, r0)) if sessions_held > n0 => {
            ratio((after - r0) * 1024.0, (sessions_held - n0) as f64).map(round3)
        }
        _ => None,
    };
    let targets = vec![
        Target::at_least(
            "sessions held",
            k.min(10_000) as f64,
            Some(sessions_held as f64),
        ),
        Target::at_most("relay KiB per idle session", 64.0, per_session),
    ];
    drop(held);
    drop(relay);
    Ok(SessionsReport {
        sessions_asked: k,
        sessions_held,
        most_sessions_seen: most,
        connect_failures: failures,
        ramp_seconds: round3(ramp.as_secs_f64()),
        hold_seconds: round3(hold.as_secs_f64()),
        relay_rss_mb_before: round3(before),
        relay_rss_mb_after: round3(after),
        relay_rss_peak_mb: round3(peak),
        relay_rss_kib_per_session: per_session,
        relay_rss_kib_per_session_slope: slope,
        relay_cpu_s_ramp: round3(cpu0.until(&cpu1).total_s),
        relay_cpu_cores_idle: round3(cpu1.until(&cpu2).total_s / hold.as_secs_f64().max(1e-3)),
        samples,
        errors,
        targets,
    })
}

pub fn table(r: &SessionsReport) -> Table {
    let mut t = Table::new(
        format!(
            "Idle sessions: {} asked, held {:.0} s",
            r.sessions_asked, r.hold_seconds
        ),
        &[
            "sessions held",
            "most seen",
            "failures",
            "ramp s",
            "RSS before MB",
            "RSS after MB",
            "KiB/session",
            "KiB/session (slope)",
            "idle CPU cores",
        ],
    );
    t.row(vec![
        r.sessions_held.to_string(),
        r.most_sessions_seen.to_string(),
        r.connect_failures.to_string(),
        num(Some(r.ramp_seconds), 1),
        num(Some(r.relay_rss_mb_before), 1),
        num(Some(r.relay_rss_mb_after), 1),
        num(r.relay_rss_kib_per_session, 1),
        num(r.relay_rss_kib_per_session_slope, 1),
        num(Some(r.relay_cpu_cores_idle), 3),
    ]);
    t
}
