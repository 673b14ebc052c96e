//! `duet-relay`: the Duet server as a library.
//!
//! [`start`] binds the QUIC and HTTP sockets (and the admin listener, if configured),
//! starts the matching engine, and returns a [`RelayHandle`] with the bound addresses;
//! [`run`] does the same and serves until a shutdown future resolves. The binary is a thin
//! `main` over the handle, and the tests start real relays on `127.0.0.1:0` through
//! `start`.
//!
//! Map of the crate (arrows point down only):
//! * [`config`]: the one configuration struct (flags, environment, TOML file);
//! * [`endpoint`]: QUIC + TLS, certificate rotation and reload, the accept loop;
//! * [`admission`], [`blocklist`]: limits before and at admission, the operator's list;
//! * [`session`]: one user's session (`state` is its pure state machine; `handshake`,
//!   `resume` and `io` the I/O around it);
//! * [`peer`]: what partners share (id, mailbox, the swappable connection handle);
//! * [`forward`]: the datagram path;
//! * [`engine`] and [`matching`]: the matching engine (ids and mailboxes, no
//!   connections) and its pure queue; [`reputation`]: what reports leave behind;
//! * [`http`], [`admin`]: the public HTTP side and the operator's listener;
//! * [`metrics`], [`limits`]: counters, histograms, rate limits and every internal bound;
//! * [`memory`]: when to give freed heap back to the system; [`malloc_tunables`]: the
//!   binary starts with glibc's allocator set so that freed pages do not stay resident.

pub mod admin;
pub mod admission;
pub mod blocklist;
pub mod config;
pub mod endpoint;
pub mod engine;
pub mod forward;
pub mod http;
pub mod limits;
pub mod malloc_tunables;
pub mod matching;
pub mod memory;
pub mod metrics;
pub mod peer;
pub mod reputation;
pub mod session;

pub use config::Config;

use admission::{AdmissionLimits, Admissions};
use blocklist::BlockList;
use duet_certs::DevCertificate;
use endpoint::{dev_names, server_config, CLOSE_WAIT};
use engine::Matchmaker;
use matching::MatchRules;
use metrics::{Metrics, StatusLimits};
use quinn::{Endpoint, VarInt};
use session::{Lifecycle, Shared};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// One client's WebTransport session on top of its QUIC connection. It `Deref`s to the
/// [`quinn::Connection`]. Shared behind an `Arc`: a session is ~800 bytes and several
/// tasks (and the partner's route) hold it.
pub type Connection = Arc<web_transport_quinn::Session>;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Certificate(#[from] duet_certs::CertError),
    #[error("a real certificate is loaded from PEM files; there is no development certificate to rotate")]
    NotRotatable,
}

/// A running relay.
pub struct RelayHandle {
    pub quic_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The admin listener's address, when `--admin-addr` is set.
    pub admin_addr: Option<SocketAddr>,
    /// Whether the HTTP side speaks HTTPS (it does when a real certificate is loaded).
    pub https: bool,
    endpoint: Endpoint,
    fingerprint: Arc<RwLock<Option<String>>>,
    https_config: Option<axum_server::tls_rustls::RustlsConfig>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    config: Config,
    started: Instant,
    lifecycle: watch::Sender<Lifecycle>,
    draining: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    sessions: TaskTracker,
}

impl RelayHandle {
    /// Hex SHA-256 of the development certificate in use (`None` with a real certificate).
    pub fn fingerprint(&self) -> Option<String> {
        self.fingerprint
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What `/status` would say now.
    pub fn status(&self) -> metrics::Status {
        self.metrics
            .snapshot(self.started, status_limits(&self.config))
    }

    /// Replaces the development certificate now. Sessions already open keep theirs; new
    /// handshakes get the new one. Returns the new fingerprint.
    pub fn rotate_certificate(&self) -> Result<String, RelayError> {
        endpoint::rotate(
            &self.config,
            &self.endpoint,
            &self.fingerprint,
            &self.metrics,
        )
    }

    /// What SIGHUP does: re-reads the block list and, with a real certificate, its PEM
    /// files (for QUIC and HTTPS). Sessions are not touched.
    pub async fn reload(&self) -> Result<(), RelayError> {
        self.shared.admissions.blocklist.reload_if_changed(true);
        if self.config.cert.is_some() {
            endpoint::reload_pem(
                &self.config,
                &self.endpoint,
                self.https_config.as_ref(),
                &self.metrics,
            )
            .await?;
        }
        Ok(())
    }

    /// The configured drain time, in seconds (`--drain-s`).
    pub fn drain_s(&self) -> u64 {
        self.config.drain_s
    }

    /// Sessions the relay holds now (connected or parked).
    pub fn sessions(&self) -> usize {
        self.shared.admissions.sessions()
    }

    /// Drains, then shuts down: no new pairs, every client told `Draining`, `/health`
    /// answers 503; calls go on until they end or `drain` passes; then every session is
    /// closed with `shutting_down`.
    pub async fn drain_and_shutdown(self, drain: Duration) {
        let within_ms = u32::try_from(drain.as_millis()).unwrap_or(u32::MAX);
        tracing::info!(within_ms, "draining");
        self.draining.store(true, Relaxed);
        self.shared.matchmaker.drain().await;
        let _ = self.lifecycle.send(Lifecycle::Draining { within_ms });
        let deadline = tokio::time::Instant::now() + drain;
        while self.sessions() > 0 && tokio::time::Instant::now() < deadline {
            // Polls a counter the sessions keep; the drain time itself is the bound.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shutdown().await;
    }

    /// Closes every session with `shutting_down` and stops serving.
    pub async fn shutdown(self) {
        self.draining.store(true, Relaxed);
        let _ = self.lifecycle.send(Lifecycle::Closing);
        let _ = self.stop.send(true);
        // Every session task closes its WebTransport session with the code and waits
        // (bounded) for the close to go out.
        self.sessions.close();
        let _ = tokio::time::timeout(CLOSE_WAIT, self.sessions.wait()).await;
        self.endpoint.close(
            VarInt::from_u32(duet_proto::ErrorCode::ShuttingDown.to_code()),
            b"the relay is shutting down",
        );
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Starts a relay and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RelayError> {
    let relay = start(config).await?;
    shutdown.await;
    relay.shutdown().await;
    Ok(())
}

fn status_limits(c: &Config) -> StatusLimits {
    StatusLimits {
        max_sessions: c.max_sessions,
        max_sessions_per_ip: c.max_sessions_per_ip,
        max_media_kbps: c.max_media_kbps,
        max_chat_bytes: duet_proto::limits::MAX_CHAT_BYTES,
        max_frame_bytes: duet_proto::limits::MAX_FRAME_BYTES,
    }
}

/// Binds everything and starts serving.
pub async fn start(config: Config) -> Result<RelayHandle, RelayError> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let (identity, dev_cert) = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => (duet_certs::load_pem(cert, key).await?, None),
        _ => {
            let cert = DevCertificate::generate(
                &dev_names(&config),
                SystemTime::now(),
                duet_certs::DEV_VALIDITY,
            )?;
            (cert.identity(), Some(cert))
        }
    };
    let fingerprint = Arc::new(RwLock::new(dev_cert.as_ref().map(|c| c.fingerprint_hex())));
    let socket = endpoint::bind_udp(&config)?;
    let quic_err = |source| RelayError::Bind {
        what: "QUIC (UDP)",
        addr: config.quic_addr,
        source,
    };
    let runtime =
        quinn::default_runtime().ok_or_else(|| quic_err(std::io::Error::other("no runtime")))?;
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(&config, &identity)?),
        socket,
        runtime,
    )
    .map_err(quic_err)?;
    let quic_addr = endpoint.local_addr().map_err(quic_err)?;

    let tcp_err = |what, addr, source| RelayError::Bind { what, addr, source };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| tcp_err("HTTP (TCP)", config.http_addr, e))?;
    let http_addr = listener
        .local_addr()
        .map_err(|e| tcp_err("HTTP (TCP)", config.http_addr, e))?;

    let rules = MatchRules {
        interest_wait: Duration::from_millis(config.interest_wait_ms),
        skip_cooldown: Duration::from_secs(config.skip_cooldown_s),
        reputation: reputation::Rules {
            reports: config.cooling_reports,
            window: Duration::from_secs(config.cooling_window_s),
            cooling_off: Duration::from_secs(config.cooling_off_s),
        },
    };
    let matchmaker = Matchmaker::start(rules, metrics.clone());
    let blocklist = match &config.block_list {
        Some(path) => BlockList::from_file(path),
        None => BlockList::empty(),
    };
    let admissions = Arc::new(Admissions::new(
        AdmissionLimits {
            max_sessions: config.max_sessions,
            max_sessions_per_prefix: config.max_sessions_per_ip,
            max_handshakes: config.max_handshakes.max(1),
            retry_above: config.retry_above,
            // 0: follow the per-address session limit, never below a floor that leaves
            // room for retries and reloads (30 at once, 120 a minute).
            handshake_burst: match config.handshake_burst {
                0 => u32::try_from(config.max_sessions_per_ip)
                    .unwrap_or(u32::MAX)
                    .max(30),
                n => n,
            },
            handshakes_per_minute: match config.handshakes_per_minute {
                0 => u32::try_from(config.max_sessions_per_ip.saturating_mul(4))
                    .unwrap_or(u32::MAX)
                    .max(120),
                n => n,
            },
        },
        blocklist,
        metrics.clone(),
    ));
    let (lifecycle, lifecycle_rx) = watch::channel(Lifecycle::Serving);
    let shared = Arc::new(Shared::new(
        config.clone(),
        metrics.clone(),
        matchmaker,
        admissions.clone(),
        lifecycle_rx.clone(),
    ));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let sessions = TaskTracker::new();

    tasks.push(tokio::spawn(endpoint::accept_loop(
        endpoint.clone(),
        shared.clone(),
        admissions.clone(),
        sessions.clone(),
        lifecycle_rx.clone(),
    )));

    let draining = Arc::new(AtomicBool::new(false));
    let state = http::HttpState {
        metrics: metrics.clone(),
        started,
        limits: status_limits(&config),
        quic_port: quic_addr.port(),
        fingerprint: fingerprint.clone(),
        web_root: config.web_root.clone(),
        draining: draining.clone(),
    };
    let admin_state = state.clone();
    // The WebSocket fallback lives on the same port as the page (same origin, and the
    // only one a network that blocks UDP may leave open).
    let ws_entry = session::ws::WsEntry {
        shared: shared.clone(),
        tracker: sessions.clone(),
    };
    let mut app = http::router(state);
    if !config.no_websocket {
        app = app.merge(
            axum::Router::new()
                .route(
                    duet_proto::ws::WS_PATH,
                    axum::routing::get(session::ws::upgrade),
                )
                .with_state(ws_entry),
        );
    }
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut https_config = None;
    match (&config.cert, &config.key) {
        // With a real certificate the page is served over HTTPS too: a browser on another
        // device only grants camera, microphone and WebTransport to a secure context.
        (Some(cert), Some(key)) => {
            // The QUIC side uses ring; make it rustls' process-wide default so the HTTPS
            // side agrees (an error just means one is installed).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| duet_certs::CertError::Load {
                    path: format!("{} / {}", cert.display(), key.display()),
                    reason: e.to_string(),
                })?;
            https_config = Some(tls.clone());
            session::ws::tune_tcp(socket2::SockRef::from(&listener));
            let std_listener = listener
                .into_std()
                .map_err(|e| tcp_err("HTTPS (TCP)", config.http_addr, e))?;
            let handle = axum_server::Handle::new();
            let server = axum_server::from_tcp_rustls(std_listener, tls)
                .map_err(|e| tcp_err("HTTPS (TCP)", config.http_addr, e))?;
            let mut stopped = stopped.clone();
            let stopper = handle.clone();
            tasks.push(tokio::spawn(async move {
                let _ = stopped.changed().await;
                stopper.graceful_shutdown(Some(Duration::from_secs(1)));
            }));
            tasks.push(tokio::spawn(async move {
                let serve = server.handle(handle).serve(app);
                if let Err(e) = serve.await {
                    tracing::error!("HTTPS server failed: {e}");
                }
            }));
        }
        _ => {
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    session::ws::tune_tcp(socket2::SockRef::from(&*tcp));
                });
                let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("HTTP server failed: {e}");
                }
            }));
        }
    }

    let admin_addr = match (&config.admin_addr, &config.admin_token) {
        (Some(addr), Some(token)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| tcp_err("admin (TCP)", *addr, e))?;
            let bound = listener
                .local_addr()
                .map_err(|e| tcp_err("admin (TCP)", *addr, e))?;
            let app = admin::router(admin::AdminState {
                http: admin_state,
                shared: shared.clone(),
                token: Arc::from(token.as_str()),
            });
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("admin server failed: {e}");
                }
            }));
            Some(bound)
        }
        _ => None,
    };

    // Rotation: replace the development certificate after two thirds of its life.
    if let Some(cert) = dev_cert {
        let (endpoint, fingerprint, metrics, config) = (
            endpoint.clone(),
            fingerprint.clone(),
            metrics.clone(),
            config.clone(),
        );
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let mut rotate_at = cert.rotate_at();
            loop {
                let wait = rotate_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => return,
                }
                match endpoint::rotate(&config, &endpoint, &fingerprint, &metrics) {
                    Ok(_) => {
                        let life = duet_certs::DEV_VALIDITY * 2 / 3;
                        rotate_at = SystemTime::now() + life;
                    }
                    Err(e) => {
                        tracing::error!("certificate rotation failed, retrying in a minute: {e}");
                        rotate_at = SystemTime::now() + Duration::from_secs(60);
                    }
                }
            }
        }));
    }

    // Reload on change: the block list, and a real certificate's PEM files.
    {
        let (endpoint, metrics, config, admissions, https) = (
            endpoint.clone(),
            metrics.clone(),
            config.clone(),
            admissions.clone(),
            https_config.clone(),
        );
        let mut stopped = stopped.clone();
        let pem = config.cert.clone().zip(config.key.clone());
        let mut seen = pem.as_ref().and_then(|(c, k)| endpoint::pem_mtime(c, k));
        tasks.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(config.reload_poll_ms.max(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                admissions.blocklist.reload_if_changed(false);
                let Some((cert, key)) = &pem else { continue };
                let now = endpoint::pem_mtime(cert, key);
                if now != seen {
                    match endpoint::reload_pem(&config, &endpoint, https.as_ref(), &metrics).await {
                        Ok(()) => seen = now,
                        // A half-written pair fails to load; the next tick tries again.
                        Err(e) => tracing::warn!("certificate reload failed: {e}"),
                    }
                }
            }
        }));
    }

    // Once a second: forget handshake-rate buckets that have refilled, publish the sizes
    // of the maps outside the engine (the engine sweeps its own), and give freed heap back
    // to the system when the relay goes idle or once a minute while busy (see `memory`).
    {
        let (shared, metrics) = (shared.clone(), metrics.clone());
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut trims = memory::TrimSchedule::new();
            let trimmer = memory::Trimmer::spawn();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                let now = std::time::Instant::now();
                let buckets = shared.admissions.sweep_rates(now);
                metrics.held(metrics::Held::RateBuckets, buckets);
                metrics.held(metrics::Held::ResumeTokens, shared.resumes.len());
                if trims.tick(now, shared.admissions.sessions()) {
                    if let Some(t) = &trimmer {
                        t.request();
                    }
                }
            }
        }));
    }

    Ok(RelayHandle {
        quic_addr,
        http_addr,
        admin_addr,
        https: config.cert.is_some() && config.key.is_some(),
        endpoint,
        fingerprint,
        https_config,
        metrics,
        shared,
        config,
        started,
        lifecycle,
        draining,
        stop,
        tasks,
        sessions,
    })
}
