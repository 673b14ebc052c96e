//! `duet-client`: the native Duet client, speaking the same protocol as the browser.
//!
//! [`Client`] is one WebTransport session to a relay: `Hello`, control messages both ways,
//! media datagrams, and chat streams. [`call`] builds a whole synthetic call on top of it
//! (the `duet-client call` subcommand, the tests and the benchmarks use it). A mobile app
//! would wrap the same `Client`.

pub mod call;
pub mod e2ee;
pub mod mobile;
pub mod quality;
pub mod synth;

use bytes::Bytes;
use duet_proto::frame::FrameReader;
use duet_proto::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, SendStream};

/// Control messages received but not yet read by the application. The relay sends a few
/// a second; a full queue applies backpressure through QUIC flow control.
const CONTROL_QUEUE: usize = 256;

/// Chat lines received but not yet read.
const CHAT_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the relay: {0}")]
    Connect(String),
    #[error("the relay closed the session: {code} ({message})")]
    Refused { code: String, message: String },
    #[error("the relay sent an error: {0:?}")]
    Server(ErrorMsg),
    #[error("the session is closed: {0}")]
    Closed(String),
    #[error("protocol error: {0}")]
    Protocol(#[from] DecodeError),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// How to reach a relay.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `https://host:port` of the relay's QUIC side (the `/chat` path is added).
    pub relay: String,
    /// Trust a development certificate by its SHA-256; `None` uses the system's roots.
    pub cert_hash: Option<[u8; 32]>,
    /// Local address to bind; `None` picks one on the relay's address family.
    pub bind: Option<SocketAddr>,
    /// QUIC idle timeout; keep-alives go out at a third of it.
    pub idle_timeout: Duration,
    /// Carry the connection through a [`mobile::MobileSocket`] so the call can move to a
    /// new socket mid-call ([`Client::migrate`]).
    pub mobile: bool,
    /// Receive window per incoming stream, in bytes; `None` keeps quinn's default. Tests
    /// shrink it to play a client that withholds stream credit.
    pub stream_receive_window: Option<u32>,
    /// Read incoming chat streams (the default). `false` leaves them to the caller
    /// (`Client::connection().accept_uni()`): tests play a client that never reads its
    /// chat, so the relay's writer runs out of stream credit.
    pub read_chat: bool,
}

impl ConnectOptions {
    pub fn new(relay: impl Into<String>, cert_hash: Option<[u8; 32]>) -> Self {
        Self {
            relay: relay.into(),
            cert_hash,
            bind: None,
            idle_timeout: Duration::from_secs(10),
            mobile: false,
            stream_receive_window: None,
            read_chat: true,
        }
    }

    fn url(&self) -> String {
        format!("{}{}", self.relay.trim_end_matches('/'), SESSION_PATH)
    }
}

/// Builds a client endpoint for `opts`. Exposed so tests can open raw sessions.
pub fn endpoint(opts: &ConnectOptions) -> Result<ClientEndpoint, ClientError> {
    endpoint_with(opts, None)
}

/// Resolves every name to one address: how a mobile client points its QUIC endpoint at
/// its hop while keeping the relay's real name for TLS.
#[derive(Debug)]
struct FixedResolver(SocketAddr);

impl wtransport::config::DnsResolver for FixedResolver {
    fn resolve(&self, _host: &str) -> std::pin::Pin<Box<dyn wtransport::config::DnsLookupFuture>> {
        let addr = self.0;
        Box::pin(async move { Ok(Some(addr)) })
    }
}

fn endpoint_with(
    opts: &ConnectOptions,
    resolve_to: Option<SocketAddr>,
) -> Result<ClientEndpoint, ClientError> {
    let bind = opts.bind.unwrap_or_else(|| {
        if opts.relay.contains('[') {
            "[::]:0"
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([0u8; 16], 0)))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    });
    let builder = ClientConfig::builder().with_bind_address(bind);
    let builder = match opts.cert_hash {
        Some(hash) => builder.with_server_certificate_hashes([Sha256Digest::new(hash)]),
        None => builder.with_native_certs(),
    };
    let builder = builder
        .max_idle_timeout(Some(opts.idle_timeout))
        .map_err(|e| ClientError::Connect(format!("idle timeout: {e}")))?
        .keep_alive_interval(Some(opts.idle_timeout / 3));
    let mut config = match resolve_to {
        Some(addr) => builder.dns_resolver(FixedResolver(addr)).build(),
        None => builder.build(),
    };
    let mut transport = transport_config(opts.idle_timeout);
    if let Some(window) = opts.stream_receive_window {
        transport.stream_receive_window(window.into());
    }
    config
        .quic_config_mut()
        .transport_config(Arc::new(transport));
    Endpoint::client(config).map_err(|e| ClientError::Connect(format!("bind {bind}: {e}")))
}

/// QUIC transport settings for a media client: the idle timeout with keep-alives at a
/// third of it, and BBR congestion control. A network change loses every packet for a
/// moment; a loss-based controller (quinn's default, CUBIC) then declares persistent
/// congestion and restarts from two packets, which kept media away for ~520 ms after a
/// 300 ms handover. BBR paces by measured bandwidth and RTT instead: ~360 ms
/// (`duet-bench handover`). The relay uses BBR too.
pub fn transport_config(idle_timeout: Duration) -> wtransport::quinn::TransportConfig {
    let mut t = wtransport::quinn::TransportConfig::default();
    t.max_idle_timeout(wtransport::quinn::IdleTimeout::try_from(idle_timeout).ok());
    t.keep_alive_interval(Some(idle_timeout / 3));
    t.congestion_controller_factory(Arc::new(wtransport::quinn::congestion::BbrConfig::default()));
    t
}

/// A client-side QUIC endpoint: one UDP socket that can carry many sessions (load
/// generators put hundreds of sessions on one, so the generator is not the bottleneck).
pub type ClientEndpoint = Endpoint<wtransport::endpoint::endpoint_side::Client>;

/// Opens a bare WebTransport session (no control stream yet) on its own endpoint.
pub async fn connect_raw(opts: &ConnectOptions) -> Result<Connection, ClientError> {
    connect_raw_on(&endpoint(opts)?, opts).await
}

/// Opens a bare WebTransport session on an existing endpoint.
pub async fn connect_raw_on(
    endpoint: &ClientEndpoint,
    opts: &ConnectOptions,
) -> Result<Connection, ClientError> {
    endpoint
        .connect(opts.url())
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))
}

/// Describes why a connection ended, from the relay's close code and reason.
pub fn close_reason(e: &wtransport::error::ConnectionError) -> ClientError {
    match e {
        wtransport::error::ConnectionError::ApplicationClosed(close) => {
            let raw = close.code().into_inner();
            // The relay closes the WebTransport session: the capsule carries its code as
            // is; when only the QUIC close arrives, the code is in HTTP/3's range.
            let code = u32::try_from(raw).ok().or_else(|| webtransport_code(raw));
            let name = code
                .and_then(ErrorCode::from_code)
                .map(|c| c.name().to_string())
                .unwrap_or_else(|| format!("{}", close.code()));
            ClientError::Refused {
                code: name,
                message: String::from_utf8_lossy(close.reason()).into_owned(),
            }
        }
        other => ClientError::Closed(other.to_string()),
    }
}

/// The WebTransport application error code carried in an HTTP/3 error code (RFC 9297 /
/// draft-ietf-webtrans-http3: codes 0x52e4a40fa8db.., skipping the reserved
/// 0x1f * N + 0x21 values).
fn webtransport_code(h3: u64) -> Option<u32> {
    const FIRST: u64 = 0x52e4a40fa8db;
    let offset = h3.checked_sub(FIRST)?;
    u32::try_from(offset - offset / 0x1f).ok()
}

/// One session with a relay.
pub struct Client {
    conn: Connection,
    control: SendStream,
    inbox: mpsc::Receiver<Result<ServerMsg, ClientError>>,
    chat_in: mpsc::Receiver<(u64, ChatFrame)>,
    chat_out: Option<(u64, SendStream)>,
    mobile: Option<mobile::MobileSocket>,
}

/// Where a relay URL points: its socket address and whether the host is a name.
async fn resolve_relay(relay: &str) -> Result<(SocketAddr, bool), ClientError> {
    let rest = relay.strip_prefix("https://").ok_or_else(|| {
        ClientError::Connect(format!("{relay}: the relay URL must start with https://"))
    })?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:443")
    } else {
        authority.to_string()
    };
    if let Ok(addr) = with_port.parse::<SocketAddr>() {
        return Ok((addr, false));
    }
    let addr = tokio::net::lookup_host(with_port.as_str())
        .await
        .map_err(|e| ClientError::Connect(format!("cannot resolve {authority}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Connect(format!("{authority} has no address")))?;
    Ok((addr, true))
}

impl Client {
    /// Connects and opens the control stream; call [`Client::hello`] next.
    pub async fn connect(opts: &ConnectOptions) -> Result<Client, ClientError> {
        if !opts.mobile {
            let conn = connect_raw(opts).await?;
            return Self::start(conn, opts.read_chat).await;
        }
        let (relay_addr, is_name) = resolve_relay(&opts.relay).await?;
        let hop = mobile::MobileSocket::start(relay_addr)
            .await
            .map_err(|e| ClientError::Connect(format!("mobile socket: {e}")))?;
        let mut via = opts.clone();
        let endpoint = if is_name {
            // Keep the name (TLS checks it); resolve it to the hop.
            endpoint_with(&via, Some(hop.local_addr()))?
        } else {
            // An IP literal is not resolved; address the hop directly. Certificate-hash
            // trust does not check the name, and a real certificate needs a name anyway.
            via.relay = format!("https://{}", hop.local_addr());
            endpoint_with(&via, None)?
        };
        let conn = connect_raw_on(&endpoint, &via).await?;
        let mut client = Self::start(conn, opts.read_chat).await?;
        client.mobile = Some(hop);
        Ok(client)
    }

    /// Moves the call to a new UDP socket (a new source port, as after a network change);
    /// the relay follows after validating the new path. Only for clients connected with
    /// `ConnectOptions::mobile`. Returns the new local address.
    pub async fn migrate(&self) -> Result<SocketAddr, ClientError> {
        let hop = self.hop()?;
        hop.migrate()
            .await
            .map_err(|e| ClientError::Connect(format!("migrate: {e}")))
    }

    /// Moves the call to a new UDP socket bound to `local`, as a phone app does when the
    /// OS reports a new network with its own address: the relay sees a new IP and port,
    /// validates the path and follows it. Only for clients connected with
    /// `ConnectOptions::mobile`. Returns the new local address.
    pub async fn migrate_to(&self, local: std::net::IpAddr) -> Result<SocketAddr, ClientError> {
        let hop = self.hop()?;
        hop.migrate_to(local)
            .await
            .map_err(|e| ClientError::Connect(format!("migrate to {local}: {e}")))
    }

    fn hop(&self) -> Result<&mobile::MobileSocket, ClientError> {
        self.mobile.as_ref().ok_or_else(|| {
            ClientError::Connect("this client was not connected with `mobile` set".into())
        })
    }

    /// Connects on a shared endpoint (see [`ClientEndpoint`]).
    pub async fn connect_on(
        endpoint: &ClientEndpoint,
        opts: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let conn = connect_raw_on(endpoint, opts).await?;
        Self::start(conn, opts.read_chat).await
    }

    /// Wraps an open session: opens the control stream and starts the readers.
    pub async fn on_connection(conn: Connection) -> Result<Client, ClientError> {
        Self::start(conn, true).await
    }

    async fn start(conn: Connection, read_chat: bool) -> Result<Client, ClientError> {
        let opening = conn.open_bi().await.map_err(|e| close_reason(&e))?;
        let (control, recv) = opening
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))?;
        let (tx, inbox) = mpsc::channel(CONTROL_QUEUE);
        tokio::spawn(read_control(conn.clone(), recv, tx));
        let (chat_tx, chat_in) = mpsc::channel(CHAT_QUEUE);
        if read_chat {
            tokio::spawn(accept_chat(conn.clone(), chat_tx));
        }
        Ok(Client {
            conn,
            control,
            inbox,
            chat_in,
            chat_out: None,
            mobile: None,
        })
    }

    /// Sends `Hello` (with [`native_caps`]) and waits for `Welcome`.
    pub async fn hello(
        &mut self,
        name: &str,
        interests: &[String],
        resume: Option<ResumeToken>,
    ) -> Result<Welcome, ClientError> {
        self.hello_as(Hello {
            version: PROTOCOL_VERSION,
            name: name.to_string(),
            interests: interests.to_vec(),
            resume,
            visitor: None,
            media: native_caps(),
        })
        .await
    }

    /// Sends this `Hello` as it is and waits for `Welcome`.
    pub async fn hello_as(&mut self, hello: Hello) -> Result<Welcome, ClientError> {
        self.send(&ClientMsg::Hello(hello)).await?;
        match self.recv().await? {
            ServerMsg::Welcome(w) => Ok(w),
            ServerMsg::Error(e) => Err(ClientError::Server(e)),
            other => Err(ClientError::Closed(format!(
                "expected Welcome, got {other:?}"
            ))),
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        let frame = encode_frame(&msg.encode())?;
        self.write_control(&frame).await
    }

    /// Writes raw bytes to the control stream (tests use it to send bad frames).
    pub async fn write_control(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.control
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// The next control message. A fatal `Error` from the relay comes back as a message;
    /// the end of the session as `Err`.
    pub async fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        match self.inbox.recv().await {
            Some(r) => r,
            None => Err(ClientError::Closed("control stream ended".into())),
        }
    }

    /// Like [`Client::recv`], with a deadline.
    pub async fn recv_timeout(&mut self, d: Duration) -> Result<ServerMsg, ClientError> {
        tokio::time::timeout(d, self.recv())
            .await
            .map_err(|_| ClientError::Timeout("a control message"))?
    }

    /// Waits for the first message `pick` accepts, skipping others (Stats, Queued…).
    pub async fn wait_for<T>(
        &mut self,
        d: Duration,
        what: &'static str,
        mut pick: impl FnMut(&ServerMsg) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| ClientError::Timeout(what))??;
            if let Some(t) = pick(&msg) {
                return Ok(t);
            }
        }
    }

    pub fn send_datagram(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.conn
            .send_datagram(bytes)
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    pub async fn recv_datagram(&self) -> Result<Bytes, ClientError> {
        self.conn
            .receive_datagram()
            .await
            .map(|d| d.payload())
            .map_err(|e| close_reason(&e))
    }

    /// Sends a chat line in clear to the partner of pairing `match_id`. The relay's own
    /// tests use it (the relay forwards any line); an app sends sealed lines
    /// ([`Client::send_chat_frame`] with [`e2ee::PairingCrypto::seal_line`]), and its partner
    /// never shows a line in clear.
    pub async fn send_chat(&mut self, match_id: u64, text: &str) -> Result<(), ClientError> {
        self.send_chat_frame(match_id, &ChatFrame::Line { text: text.into() })
            .await
    }

    /// Sends a chat frame (a `Line` or a `Sealed` line) on pairing `match_id`'s stream,
    /// opening that stream first if this is the pairing's first line.
    pub async fn send_chat_frame(
        &mut self,
        match_id: u64,
        line: &ChatFrame,
    ) -> Result<(), ClientError> {
        if self.chat_out.as_ref().map(|(m, _)| *m) != Some(match_id) {
            let opening = self.conn.open_uni().await.map_err(|e| close_reason(&e))?;
            let mut stream = opening
                .await
                .map_err(|e| ClientError::Closed(e.to_string()))?;
            let open = encode_frame(&ChatFrame::Open { match_id }.encode())?;
            stream
                .write_all(&open)
                .await
                .map_err(|e| ClientError::Closed(e.to_string()))?;
            if let Some((_, mut old)) = self.chat_out.replace((match_id, stream)) {
                let _ = old.finish().await;
            }
        }
        let frame = encode_frame(&line.encode())?;
        if let Some((_, stream)) = self.chat_out.as_mut() {
            stream
                .write_all(&frame)
                .await
                .map_err(|e| ClientError::Closed(e.to_string()))?;
        }
        Ok(())
    }

    /// The next chat line in clear from a partner: `(match_id, text)` (sealed lines are
    /// passed over: see [`Client::recv_chat_frame`]).
    pub async fn recv_chat(&mut self) -> Option<(u64, String)> {
        loop {
            if let (m, ChatFrame::Line { text }) = self.chat_in.recv().await? {
                return Some((m, text));
            }
        }
    }

    pub fn try_recv_chat(&mut self) -> Option<(u64, String)> {
        loop {
            if let (m, ChatFrame::Line { text }) = self.chat_in.try_recv().ok()? {
                return Some((m, text));
            }
        }
    }

    /// The next chat line from a partner, in clear or sealed: `(match_id, frame)`.
    pub async fn recv_chat_frame(&mut self) -> Option<(u64, ChatFrame)> {
        self.chat_in.recv().await
    }

    pub fn try_recv_chat_frame(&mut self) -> Option<(u64, ChatFrame)> {
        self.chat_in.try_recv().ok()
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Leaves politely: `Leave`, then a normal close.
    pub async fn close(mut self) {
        let _ = self.send(&ClientMsg::Leave).await;
        let _ = self.control.finish().await;
        self.conn.close(wtransport::VarInt::from_u32(0), b"bye");
    }
}

/// A resume attempt gives up after this long (a handshake started while the network was
/// still down may never complete; later attempts cover the moment it comes back).
const RESUME_ATTEMPT: Duration = Duration::from_secs(2);

/// A new attempt starts this often while none has succeeded (±20% jitter, so a crowd that
/// lost the same network does not retry in step)...
const RESUME_SPACING: Duration = Duration::from_millis(200);

/// ...with at most this many in flight at once.
const RESUME_IN_FLIGHT: usize = 5;

/// Reconnects after a lost connection and takes the session back with `token`, until
/// `give_up`. Attempts overlap: a handshake begun while the network was still down
/// retransmits only on QUIC's backed-off timers (a second or more), so rather than wait
/// for it a fresh attempt starts every 200 ms, and the first to finish wins. The token is
/// single-use, so the first `Hello` to reach the relay takes the session; the others are
/// refused and dropped. A refused token (`ErrorCode::BadResumeToken`: the grace period ran
/// out, or the token was used) is final once no other attempt is still in flight.
pub async fn resume(
    opts: &ConnectOptions,
    name: &str,
    token: ResumeToken,
    give_up: Duration,
) -> Result<(Client, Welcome), ClientError> {
    let deadline = tokio::time::Instant::now() + give_up;
    let mut attempts = tokio::task::JoinSet::new();
    let mut next_start = tokio::time::Instant::now();
    // A refusal is final only once no other attempt is in flight: when the network comes
    // back, attempts that waited in their handshakes all get through at once; the first
    // Hello takes the token and the others are refused, and a refusal can arrive before
    // the winner's Welcome (it is sent at once, the Welcome by the session it resumes).
    let mut refused: Option<ClientError> = None;
    loop {
        if attempts.is_empty() {
            if let Some(e) = refused.take() {
                return Err(e);
            }
        }
        tokio::select! {
            done = attempts.join_next(), if !attempts.is_empty() => match done {
                Some(Ok(Ok(Ok(resumed)))) => {
                    attempts.abort_all();
                    return Ok(resumed);
                }
                Some(Ok(Ok(Err(ClientError::Server(e))))) if e.code == ErrorCode::BadResumeToken => {
                    refused = Some(ClientError::Server(e));
                }
                _ => {} // failed or timed out: others are running or will start
            },
            // No new attempt after a refusal: the token is used or expired.
            _ = tokio::time::sleep_until(next_start), if refused.is_none() && attempts.len() < RESUME_IN_FLIGHT => {
                let (opts, name) = (opts.clone(), name.to_string());
                attempts.spawn(tokio::time::timeout(RESUME_ATTEMPT, async move {
                    let mut client = Client::connect(&opts).await?;
                    let welcome = client.hello(&name, &[], Some(token)).await?;
                    Ok::<_, ClientError>((client, welcome))
                }));
                next_start = tokio::time::Instant::now()
                    + RESUME_SPACING.mul_f64(rand::random_range(0.8..1.2));
            }
            _ = tokio::time::sleep_until(deadline) => {
                attempts.abort_all();
                return Err(refused.unwrap_or(ClientError::Timeout("a resumed session")));
            }
        }
    }
}

impl Drop for Client {
    /// Dropping the client ends the session (the reader tasks hold the connection, so it
    /// would otherwise stay open until the idle timeout).
    fn drop(&mut self) {
        self.conn
            .close(wtransport::VarInt::from_u32(0), b"client dropped");
        if let Some(hop) = self.mobile.take() {
            // Keep the hop up a moment so the close frame reaches the relay; otherwise
            // the relay would take the silence for a lost network and hold the session.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    drop(hop);
                });
            }
        }
    }
}

async fn read_control(
    conn: Connection,
    mut recv: wtransport::RecvStream,
    tx: mpsc::Sender<Result<ServerMsg, ClientError>>,
) {
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 4096];
    loop {
        loop {
            match reader.next_frame() {
                Ok(None) => break,
                Ok(Some(body)) => {
                    let msg = ServerMsg::decode(&body).map_err(ClientError::from);
                    let failed = msg.is_err();
                    if tx.send(msg).await.is_err() || failed {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => reader.push(&buf[..n]),
            Ok(None) | Err(_) => {
                // The stream ended; report why the session closed, if it did. wtransport
                // keeps the relay's WebTransport close (code and reason from the capsule)
                // as the error of its stream-accepting calls, while `closed()` would only
                // say that wtransport then closed the QUIC connection itself.
                let why = match tokio::time::timeout(Duration::from_secs(2), conn.accept_bi()).await
                {
                    Ok(Err(e)) => close_reason(&e),
                    Ok(Ok(_)) | Err(_) => ClientError::Closed("control stream ended".into()),
                };
                let _ = tx.send(Err(why)).await;
                return;
            }
        }
    }
}

async fn accept_chat(conn: Connection, tx: mpsc::Sender<(u64, ChatFrame)>) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut reader = FrameReader::new();
            let mut buf = vec![0u8; 4096];
            let mut match_id = None;
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                reader.push(&buf[..n]);
                while let Ok(Some(body)) = reader.next_frame() {
                    match (ChatFrame::decode(&body), match_id) {
                        (Ok(ChatFrame::Open { match_id: m }), None) => match_id = Some(m),
                        (
                            Ok(line @ (ChatFrame::Line { .. } | ChatFrame::Sealed { .. })),
                            Some(m),
                        ) => {
                            if tx.send((m, line)).await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            }
        });
    }
}

/// What the native client says it handles: its media is synthetic, so it "decodes" every
/// codec and "encodes" VP8, the floor every browser decodes.
pub fn native_caps() -> MediaCaps {
    MediaCaps {
        decode: VideoCodec::ALL.to_vec(),
        encode: vec![VideoCodec::Vp8],
        hardware_encode: vec![],
    }
}
