//! QUIC + TLS setup, certificate rotation and reload, and the accept loop.
//!
//! The accept loop asks [`crate::admission`] about each connection attempt before any
//! handshake work (refuse, Retry, or accept with a handshake slot) and spawns each
//! accepted one on the relay's [`TaskTracker`], so shutdown can wait for every session.
//!
//! Certificates: a development certificate is rotated before it expires; a real one
//! (PEM files) is reloaded when its files change or on SIGHUP ([`reload_pem`]), for QUIC
//! and HTTPS alike. quinn and rustls use a new configuration for new handshakes only, so
//! sessions already open keep going.

use crate::admission::{Admissions, IncomingDecision};
use crate::metrics::Metrics;
use crate::session::{handshake, Lifecycle, Shared};
use crate::{Config, RelayError};
use duet_certs::DevCertificate;
use quinn::Endpoint;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use wtransport::Identity;

/// QUIC transport settings. Built fresh for each certificate (quinn's config is not Clone).
pub fn transport_config(c: &Config) -> quinn::TransportConfig {
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
pub fn server_config(c: &Config, identity: &Identity) -> Result<quinn::ServerConfig, RelayError> {
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
    // Session resumption by stateless tickets (the session's keys sealed into the ticket
    // the client keeps) rather than rustls' default in-memory cache: that cache holds up
    // to 256 sessions and its table grows to that size over hours of reconnects (the
    // soak's live heap grew 25 KiB this way), while stateless tickets cost the relay
    // nothing per client. Without 0-RTT there is no replay to track.
    tls.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| tls_error(&e))?;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| tls_error(&e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(c)));
    config.migration(true);
    // No NEW_TOKEN address-validation tokens. quinn's default remembers every token a
    // client redeems, in a set that only grows (to 10 MiB, then a 10 MiB filter per
    // two-week period), so a relay's memory climbed with every reconnect. Without 0-RTT
    // they buy little: a returning client under load answers a Retry (one round trip)
    // instead, as a new one does.
    let mut tokens = quinn::ValidationTokenConfig::default();
    tokens.sent(0).log(Arc::new(quinn::NoneTokenLog));
    config.validation_token_config(tokens);
    Ok(config)
}

pub fn bind_udp(c: &Config) -> Result<std::net::UdpSocket, RelayError> {
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

pub fn dev_names(c: &Config) -> Vec<String> {
    let mut names = DevCertificate::local_names();
    if !c.quic_addr.ip().is_unspecified() {
        names.push(c.quic_addr.ip().to_string());
    }
    names.extend(c.cert_names.iter().cloned());
    names.sort();
    names.dedup();
    names
}

pub fn rotate(
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

/// Reloads a real certificate from its PEM files into the QUIC endpoint (and the HTTPS
/// side, if given). Sessions already open are not touched.
pub async fn reload_pem(
    config: &Config,
    endpoint: &Endpoint,
    https: Option<&axum_server::tls_rustls::RustlsConfig>,
    metrics: &Metrics,
) -> Result<(), RelayError> {
    let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
        return Err(RelayError::NotRotatable);
    };
    let identity = duet_certs::load_pem(cert, key).await?;
    let quic = server_config(config, &identity)?;
    if let Some(https) = https {
        https
            .reload_from_pem_file(cert, key)
            .await
            .map_err(|e| duet_certs::CertError::Load {
                path: format!("{} / {}", cert.display(), key.display()),
                reason: e.to_string(),
            })?;
    }
    endpoint.set_server_config(Some(quic));
    metrics.certificate_reloads.fetch_add(1, Relaxed);
    tracing::info!(cert = %cert.display(), "certificate reloaded");
    Ok(())
}

/// The later of the two files' modification times (what a reload watches).
pub fn pem_mtime(cert: &Path, key: &Path) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(cert).max(m(key))
}

/// Accepts connections until the relay closes: each attempt is refused, asked to Retry,
/// or accepted with a handshake slot and served on its own task.
pub async fn accept_loop(
    endpoint: Endpoint,
    shared: Arc<Shared>,
    admissions: Arc<Admissions>,
    tracker: TaskTracker,
    mut lifecycle: watch::Receiver<Lifecycle>,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            changed = lifecycle.changed() => {
                if changed.is_err() || *lifecycle.borrow() == Lifecycle::Closing {
                    return;
                }
                continue;
            }
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => return, // the endpoint is closed
            },
        };
        let ip = incoming.remote_address().ip();
        let validated = incoming.remote_address_validated();
        let (decision, slot) = admissions.on_incoming(ip, validated, std::time::Instant::now());
        match (decision, slot) {
            (IncomingDecision::Accept, Some(slot)) => {
                tracker.spawn(handshake::handle_incoming(incoming, shared.clone(), slot));
            }
            (IncomingDecision::Retry, _) if incoming.may_retry() => {
                shared.metrics.retries_sent.fetch_add(1, Relaxed);
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
            }
            (why, _) => {
                tracing::debug!(%ip, ?why, "connection refused before the handshake");
                shared.metrics.connections_refused.fetch_add(1, Relaxed);
                incoming.refuse();
            }
        }
    }
}

/// How long [`accept_loop`]'s caller waits for tasks when closing.
pub const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Shares the fingerprint for `/certificate.sha256` and `/config.json`.
pub type Fingerprint = Arc<RwLock<Option<String>>>;
