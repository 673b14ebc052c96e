//! `duet-relay`: the Duet server as a library.
//!
//! [`start`] binds the QUIC and HTTP sockets, starts the matching engine, and returns a
//! [`RelayHandle`] with the bound addresses; [`run`] does the same and serves until a
//! shutdown future resolves. The binary is a thin `main` over `run`, and the tests start
//! real relays on `127.0.0.1:0` through `start`.
//!
//! Map of the crate:
//! * [`config`]: the one configuration struct (flags, environment, TOML file);
//! * [`session`]: one user's session: admission, `Hello`, control, chat, media forwarding;
//! * [`engine`] and [`matching`]: the matching engine and its pure queue;
//! * [`http`]: the web client, `/status`, `/metrics`, `/certificate.sha256`;
//! * [`metrics`], [`limits`]: counters, rate limits and every internal bound.

pub mod config;
pub mod engine;
pub mod http;
pub mod limits;
pub mod matching;
pub mod metrics;
pub mod session;

pub use config::Config;

use duet_certs::DevCertificate;
use engine::Matchmaker;
use matching::MatchRules;
use metrics::{Metrics, StatusLimits};
use quinn::{Endpoint, VarInt};
use session::Shared;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use wtransport::Identity;

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
    /// Whether the HTTP side speaks HTTPS (it does when a real certificate is loaded).
    pub https: bool,
    endpoint: Endpoint,
    fingerprint: Arc<RwLock<Option<String>>>,
    metrics: Arc<Metrics>,
    config: Config,
    started: Instant,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        rotate(
            &self.config,
            &self.endpoint,
            &self.fingerprint,
            &self.metrics,
        )
    }

    /// Closes every session with `shutting_down` and stops serving.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        // Stop accepting before the endpoint closes, so no new session starts meanwhile.
        if !self.tasks.is_empty() {
            let accept = self.tasks.remove(0);
            let _ = tokio::time::timeout(Duration::from_secs(2), accept).await;
        }
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

/// QUIC transport settings. Built fresh for each certificate (quinn's config is not Clone).
fn transport_config(c: &Config) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let idle = Duration::from_millis(c.idle_timeout_ms.max(300));
    // Idle timeouts fit a u32 of milliseconds for any sane value; clamp the rest.
    let idle_varint = quinn::IdleTimeout::try_from(idle)
        .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(u32::MAX)));
    t.max_idle_timeout(Some(idle_varint));
    // The relay pings too, so a client that sends nothing (waiting in the queue) stays up
    // and a vanished one is noticed within the idle timeout.
    t.keep_alive_interval(Some(idle / 3));
    // Streams: the control stream plus a chat stream per pairing, and HTTP/3's own three
    // unidirectional streams. Anything above is a client misbehaving.
    t.max_concurrent_bidi_streams(4u32.into());
    t.max_concurrent_uni_streams(16u32.into());
    // Per-stream and per-connection receive windows bound what a client can make the relay
    // buffer: a few frames of control and chat, not megabytes.
    t.stream_receive_window((64u32 * 1024).into());
    t.receive_window((256u32 * 1024).into());
    // Datagram buffers: quinn drops the oldest when full, never grows. Receive: 256 KiB is
    // ~250 ms of 8 Mbit/s. Send: 64 KiB is ~500 ms of 1 Mbit/s video; media queued longer
    // than that (behind a stalled path) is stale, better dropped than delivered late.
    t.datagram_receive_buffer_size(Some(256 * 1024));
    t.datagram_send_buffer_size(64 * 1024);
    // BBR rather than quinn's default CUBIC: after a handover's burst of loss, CUBIC
    // declares persistent congestion and restarts from two packets (media gap ~520 ms for
    // a 300 ms blackout); BBR keeps pacing at the measured rate (~360 ms). See
    // `duet_client::transport_config` and BENCHMARKS.md.
    t.congestion_controller_factory(std::sync::Arc::new(quinn::congestion::BbrConfig::default()));
    t
}

/// The QUIC server configuration: TLS 1.3 with the HTTP/3 ALPN WebTransport needs, and
/// the transport settings above. Connection migration stays on (quinn's default): it is
/// what keeps a call up when a phone changes networks.
fn server_config(c: &Config, identity: &Identity) -> Result<quinn::ServerConfig, RelayError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let chain: Vec<CertificateDer<'static>> = identity
        .certificate_chain()
        .as_slice()
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        identity.private_key().secret_der().to_vec(),
    ));
    let tls_error = |e: &dyn std::fmt::Display| {
        RelayError::Certificate(duet_certs::CertError::Load {
            path: "TLS configuration".into(),
            reason: e.to_string(),
        })
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(&e))?;
    tls.alpn_protocols = vec![web_transport_quinn::ALPN.as_bytes().to_vec()];
    tls.max_early_data_size = 0;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| tls_error(&e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(c)));
    config.migration(true);
    Ok(config)
}

fn bind_udp(c: &Config) -> Result<std::net::UdpSocket, RelayError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| RelayError::Bind {
        what: "QUIC (UDP)",
        addr: c.quic_addr,
        source,
    };
    let socket = Socket::new(
        Domain::for_address(c.quic_addr),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(err)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(c.socket_buffer);
    let _ = socket.set_send_buffer_size(c.socket_buffer);
    socket.bind(&c.quic_addr.into()).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket.into())
}

fn dev_names(c: &Config) -> Vec<String> {
    let mut names = DevCertificate::local_names();
    if !c.quic_addr.ip().is_unspecified() {
        names.push(c.quic_addr.ip().to_string());
    }
    names.extend(c.cert_names.iter().cloned());
    names.sort();
    names.dedup();
    names
}

fn rotate(
    config: &Config,
    endpoint: &Endpoint,
    fingerprint: &RwLock<Option<String>>,
    metrics: &Metrics,
) -> Result<String, RelayError> {
    if config.cert.is_some() {
        return Err(RelayError::NotRotatable);
    }
    let cert = DevCertificate::generate(
        &dev_names(config),
        SystemTime::now(),
        duet_certs::DEV_VALIDITY,
    )?;
    endpoint.set_server_config(Some(server_config(config, &cert.identity())?));
    let hex = cert.fingerprint_hex();
    *fingerprint.write().unwrap_or_else(|e| e.into_inner()) = Some(hex.clone());
    metrics.certificate_rotations.fetch_add(1, Relaxed);
    tracing::info!(fingerprint = %hex, "development certificate rotated");
    Ok(hex)
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
    let socket = bind_udp(&config)?;
    let runtime = quinn::default_runtime().ok_or_else(|| RelayError::Bind {
        what: "QUIC (UDP)",
        addr: config.quic_addr,
        source: std::io::Error::other("no async runtime"),
    })?;
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(&config, &identity)?),
        socket,
        runtime,
    )
    .map_err(|source| RelayError::Bind {
        what: "QUIC (UDP)",
        addr: config.quic_addr,
        source,
    })?;
    let quic_addr = endpoint.local_addr().map_err(|source| RelayError::Bind {
        what: "QUIC (UDP)",
        addr: config.quic_addr,
        source,
    })?;

    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| RelayError::Bind {
            what: "HTTP (TCP)",
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| RelayError::Bind {
        what: "HTTP (TCP)",
        addr: config.http_addr,
        source,
    })?;

    let rules = MatchRules {
        interest_wait: Duration::from_millis(config.interest_wait_ms),
        skip_cooldown: Duration::from_secs(config.skip_cooldown_s),
    };
    let matchmaker = Matchmaker::start(rules, metrics.clone());
    let shared = Arc::new(Shared::new(config.clone(), metrics.clone(), matchmaker));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();

    // Accept loop: each connection gets its own task at once, so a slow handshake never
    // holds up the next one.
    {
        let endpoint = endpoint.clone();
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stopped.changed() => return,
                    incoming = endpoint.accept() => match incoming {
                        Some(incoming) => {
                            tokio::spawn(session::handle_incoming(incoming, shared.clone()));
                        }
                        None => return, // the endpoint is closed
                    },
                }
            }
        }));
    }

    let state = http::HttpState {
        metrics: metrics.clone(),
        started,
        limits: status_limits(&config),
        quic_port: quic_addr.port(),
        fingerprint: fingerprint.clone(),
        web_root: config.web_root.clone(),
    };
    let app = http::router(state);
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
            let std_listener = listener.into_std().map_err(|source| RelayError::Bind {
                what: "HTTPS (TCP)",
                addr: config.http_addr,
                source,
            })?;
            let handle = axum_server::Handle::new();
            let server = axum_server::from_tcp_rustls(std_listener, tls).map_err(|source| {
                RelayError::Bind {
                    what: "HTTPS (TCP)",
                    addr: config.http_addr,
                    source,
                }
            })?;
            let mut stopped = stopped.clone();
            let stopper = handle.clone();
            tasks.push(tokio::spawn(async move {
                let _ = stopped.changed().await;
                stopper.graceful_shutdown(Some(Duration::from_secs(1)));
            }));
            tasks.push(tokio::spawn(async move {
                let serve = server.handle(handle).serve(app.into_make_service());
                if let Err(e) = serve.await {
                    tracing::error!("HTTPS server failed: {e}");
                }
            }));
        }
        _ => {
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("HTTP server failed: {e}");
                }
            }));
        }
    }

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
                match rotate(&config, &endpoint, &fingerprint, &metrics) {
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

    Ok(RelayHandle {
        quic_addr,
        http_addr,
        https: config.cert.is_some() && config.key.is_some(),
        endpoint,
        fingerprint,
        metrics,
        config,
        started,
        stop,
        tasks,
    })
}
