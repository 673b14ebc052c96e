//! From a QUIC connection to a session: the WebTransport request, `Hello` within the
//! hello timeout, then either a resume (handed to the session its token names) or
//! admission and a new session. Also how every refusal is said: on the control stream
//! when there is one, and as the WebTransport session close (code and message), which is
//! what a browser's `WebTransport.closed` reports.

use super::state::Fatal;
use super::{resume, Shared};
use crate::admission::HandshakeSlot;
use crate::limits::ERROR_FLUSH_TIMEOUT;
use crate::metrics::{Drop, Metrics};
use crate::Connection;
use duet_proto::frame::FrameReader;
use duet_proto::*;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};
use web_transport_quinn::{RecvStream, SendStream};

/// A connection that has said `Hello`, on either transport.
pub enum Handoff {
    Quic(QuicHandoff),
    /// Boxed: an upgraded WebSocket is a few hundred bytes.
    Ws(Box<super::ws::WsHandoff>),
}

/// A QUIC connection that has said `Hello`: its streams and what is left in its frame
/// reader.
pub struct QuicHandoff {
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    pub reader: FrameReader,
}

impl Handoff {
    pub fn remote_addr(&self) -> std::net::SocketAddr {
        match self {
            Handoff::Quic(h) => h.conn.remote_address(),
            Handoff::Ws(h) => h.addr,
        }
    }

    /// Refuses the connection: `fatal` on its control channel, then the close.
    pub async fn refuse(self, fatal: &Fatal, metrics: &Metrics) {
        match self {
            Handoff::Quic(h) => close_with(&h.conn, Some(h.send), fatal, metrics).await,
            Handoff::Ws(h) => super::ws::close_socket(h.socket, fatal, metrics).await,
        }
    }
}

/// Handles one accepted QUIC connection attempt to the end. `slot` is its place among the
/// handshakes in flight, held until `Hello`.
pub async fn handle_incoming(incoming: quinn::Incoming, shared: Arc<Shared>, slot: HandshakeSlot) {
    let started = Instant::now();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("QUIC handshake failed: {e}");
            return;
        }
    };
    // The HTTP/3 SETTINGS exchange and the WebTransport CONNECT request, bounded like Hello.
    let deadline = Duration::from_millis(shared.config.hello_timeout_ms);
    let request = match timeout(deadline, web_transport_quinn::Request::accept(conn.clone())).await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!("WebTransport handshake failed: {e}");
            close_quic(&conn, ErrorCode::Malformed, "WebTransport handshake failed");
            return;
        }
        Err(_) => {
            close_quic(
                &conn,
                ErrorCode::HelloTimeout,
                "no WebTransport CONNECT request in time",
            );
            return;
        }
    };
    if request.url.path() != SESSION_PATH {
        let _ = timeout(
            ERROR_FLUSH_TIMEOUT,
            request.reject(web_transport_quinn::http::StatusCode::NOT_FOUND),
        )
        .await;
        close_quic(&conn, ErrorCode::Malformed, "unknown WebTransport path");
        return;
    }
    let conn = match request.ok().await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::debug!("session accept failed: {e}");
            return;
        }
    };
    let metrics = shared.metrics.clone();
    metrics.sessions_opened.fetch_add(1, Relaxed);
    // Admission is decided now, so a client of a full relay learns it at once; but a
    // resume keeps the slot its session already holds, so a refused connection still gets
    // a short while to say `Hello` with a resume token.
    let admission = shared.admissions.admit(conn.remote_address().ip());
    let hello_within = match &admission {
        Ok(_) => Duration::from_millis(shared.config.hello_timeout_ms),
        Err(_) => ERROR_FLUSH_TIMEOUT,
    };
    let hello = await_hello(&conn, hello_within, &metrics).await;
    drop(slot);
    let (send, recv, reader, hello) = match hello {
        Ok(x) => x,
        Err(Some((fatal, send))) => {
            // Full: that is the reason to give, whatever else went wrong meanwhile.
            let fatal = match admission {
                Err(refusal) => {
                    metrics.sessions_refused.fetch_add(1, Relaxed);
                    refusal
                }
                Ok(_) => fatal,
            };
            return close_with(&conn, send, &fatal, &metrics).await;
        }
        Err(None) => return,
    };
    metrics.hist.handshake_time.record(started.elapsed());
    let handoff = Handoff::Quic(QuicHandoff {
        conn,
        send,
        recv,
        reader,
    });
    if let Some(token) = hello.resume {
        drop(admission);
        return resume::hand_over(&shared, token, handoff).await;
    }
    match admission {
        Ok(admission) => super::run(shared, hello, handoff, admission).await,
        Err(refusal) => {
            metrics.sessions_refused.fetch_add(1, Relaxed);
            handoff.refuse(&refusal, &metrics).await;
        }
    }
}

/// Sends `fatal` on the control stream (if any), waits briefly for it to arrive, then
/// closes the WebTransport session with the same code and message.
pub async fn close_with(
    conn: &Connection,
    send: Option<SendStream>,
    fatal: &Fatal,
    metrics: &Metrics,
) {
    metrics.error_sent(fatal.code);
    tracing::debug!(code = %fatal.code, "closing session: {}", fatal.message);
    if let Some(mut send) = send {
        let msg = ServerMsg::error(fatal.code, fatal.message.clone(), true);
        if let Ok(frame) = encode_frame(&msg.encode()) {
            let flushed = async {
                send.write_all(&frame).await.ok()?;
                send.finish().ok()?;
                // Resolves once the peer has acknowledged everything written.
                let _ = send.stopped().await;
                Some(())
            };
            let _ = timeout(ERROR_FLUSH_TIMEOUT, flushed).await;
        }
    }
    close_session(conn, fatal.code.to_code(), &fatal.message).await;
}

/// Closes the WebTransport session: a `CLOSE_WEBTRANSPORT_SESSION` capsule with `code` and
/// `message` on the CONNECT stream (what a browser's `WebTransport.closed` reports), then
/// the QUIC connection with the same code mapped into HTTP/3's range. Waits, bounded, for
/// the close to go out.
pub async fn close_session(conn: &Connection, code: u32, message: &str) {
    web_transport_quinn::Session::close(conn, code, message.as_bytes());
    let _ = timeout(
        ERROR_FLUSH_TIMEOUT,
        web_transport_quinn::Session::closed(conn),
    )
    .await;
}

/// Closes a QUIC connection that never became a WebTransport session (no CONNECT stream
/// to carry a capsule): the code is the QUIC application error code.
pub fn close_quic(conn: &quinn::Connection, code: ErrorCode, message: &str) {
    conn.close(quinn::VarInt::from_u32(code.to_code()), message.as_bytes());
}

/// Waits for the control stream and its first frame, which must be `Hello`.
/// `Err(None)`: the connection went away before saying anything worth answering.
#[allow(clippy::type_complexity)]
async fn await_hello(
    conn: &Connection,
    within: Duration,
    metrics: &Metrics,
) -> Result<(SendStream, RecvStream, FrameReader, Hello), Option<(Fatal, Option<SendStream>)>> {
    let mut control: Option<(SendStream, RecvStream)> = None;
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let step = async {
            match &mut control {
                None => tokio::select! {
                    bi = conn.accept_bi() => match bi {
                        Ok(streams) => Step::Control(streams),
                        Err(_) => Step::Gone,
                    },
                    dg = conn.read_datagram() => match dg {
                        Ok(_) => Step::EarlyMedia,
                        Err(_) => Step::Gone,
                    },
                },
                Some((_, recv)) => tokio::select! {
                    n = recv.read(&mut buf) => match n {
                        Ok(Some(n)) => Step::Read(n),
                        _ => Step::Gone,
                    },
                    dg = conn.read_datagram() => match dg {
                        Ok(_) => Step::EarlyMedia,
                        Err(_) => Step::Gone,
                    },
                },
            }
        };
        let step = match tokio::time::timeout_at(deadline, step).await {
            Ok(s) => s,
            Err(_) => Step::TimedOut,
        };
        let send_of = |c: Option<(SendStream, RecvStream)>| c.map(|(s, _)| s);
        match step {
            Step::Control(streams) => control = Some(streams),
            Step::Read(n) => {
                reader.push(&buf[..n]);
                let frame = match reader.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(e) => {
                        return Err(Some((
                            Fatal::from_decode(&e, "control frame"),
                            send_of(control),
                        )))
                    }
                };
                let msg = match ClientMsg::decode(&frame) {
                    Ok(m) => m,
                    Err(e) => {
                        return Err(Some((
                            Fatal::from_decode(&e, "first message"),
                            send_of(control),
                        )))
                    }
                };
                let ClientMsg::Hello(hello) = msg else {
                    let fatal = Fatal::new(
                        ErrorCode::WrongState,
                        format!("the first message must be Hello, not {}", msg_name(&msg)),
                    );
                    return Err(Some((fatal, send_of(control))));
                };
                if hello.version != PROTOCOL_VERSION {
                    let fatal = Fatal::new(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "This relay speaks protocol version {PROTOCOL_VERSION}, the app sent {}. Reload the page or update the app.",
                            hello.version
                        ),
                    );
                    return Err(Some((fatal, send_of(control))));
                }
                let Some((send, recv)) = control else {
                    continue;
                };
                return Ok((send, recv, reader, hello));
            }
            Step::EarlyMedia => {
                metrics.dropped(Drop::BeforeHello);
                let fatal = Fatal::new(ErrorCode::WrongState, "media sent before Hello");
                return Err(Some((fatal, send_of(control))));
            }
            Step::TimedOut => {
                let fatal = Fatal::new(
                    ErrorCode::HelloTimeout,
                    format!("no Hello within {} ms", within.as_millis()),
                );
                return Err(Some((fatal, send_of(control))));
            }
            Step::Gone => return Err(None),
        }
    }
}

enum Step {
    Control((SendStream, RecvStream)),
    Read(usize),
    EarlyMedia,
    TimedOut,
    Gone,
}

fn msg_name(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Hello(_) => "Hello",
        ClientMsg::Next { .. } => "Next",
        ClientMsg::Leave => "Leave",
        ClientMsg::RequestKeyframe { .. } => "RequestKeyframe",
        ClientMsg::Caps(_) => "Caps",
        ClientMsg::Nack(_) => "Nack",
        ClientMsg::ReceiverReport(_) => "ReceiverReport",
        ClientMsg::Report(_) => "Report",
        ClientMsg::Typing { .. } => "Typing",
        ClientMsg::RequeueWhenLeft(_) => "RequeueWhenLeft",
        ClientMsg::KeyShare { .. } => "KeyShare",
        ClientMsg::NextKey { .. } => "NextKey",
    }
}
