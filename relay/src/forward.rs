//! The datagram path, nothing else: read a datagram from one client, check its size,
//! header and match id against the session's [`Route`], hand the same bytes to the
//! partner's current connection (QUIC, or the WebSocket fallback's media queue).
//!
//! No global lock: the only shared state is this session's route (a per-session lock) and
//! the partner's [`Peer`] connection slot (another per-session lock), each held only to
//! clone an `Arc`.

use crate::limits::TokenBucket;
use crate::matching::MatchId;
use crate::metrics::{Drop, Metrics};
use crate::peer::Peer;
use crate::session::ws::MediaQueue;
use crate::Connection;
use bytes::Bytes;
use duet_proto::limits::MAX_MEDIA_DATAGRAM_BYTES;
use duet_proto::MediaHeader;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where this session's media goes: the partner, for one pairing. `None`: nowhere.
pub type Route = Arc<Mutex<Option<(MatchId, Arc<Peer>)>>>;

/// The HTTP/3 datagram prefix (RFC 9297: the quarter stream id of the session's CONNECT
/// stream) of every session here. web-transport-quinn takes the connection's first
/// client bidirectional stream as the CONNECT stream, and that is stream 0, so every
/// session has id 0 and every datagram starts with this one byte. That is what lets the
/// relay forward the bytes it received as they are, prefix included, with no copy.
///
/// The WebSocket fallback's media messages start with their kind byte,
/// [`duet_proto::ws::KIND_MEDIA`], which is the same 0: a media message and a datagram are
/// the same bytes, so either is forwarded to either transport unchanged.
const DATAGRAM_PREFIX: u8 = 0;
const _: () = assert!(DATAGRAM_PREFIX == duet_proto::ws::KIND_MEDIA);

/// Counts of one connection's datagrams, compared with quinn's own at the end to learn
/// what quinn's buffers dropped (see `session::io::Attachment::detach`).
#[derive(Debug, Default)]
pub struct DatagramCounts {
    /// Read from this connection by [`forward_media`].
    pub read: AtomicU64,
    /// Queued toward this connection by the partner's forwarder.
    pub queued: AtomicU64,
}

/// A client connection as the forwarder sees it: where to send, and what to count.
#[derive(Debug)]
pub struct Link {
    pub to: LinkTx,
    pub counts: DatagramCounts,
}

/// Where a client's media goes out.
#[derive(Debug)]
pub enum LinkTx {
    /// As QUIC datagrams; quinn's send buffer drops the oldest when the client is slow.
    Quic(Connection),
    /// Into the WebSocket writer's short queue, which drops until the next keyframe when
    /// the socket backs up.
    Ws(Arc<MediaQueue>),
}

impl Link {
    /// Hands one datagram (prefix included) to this client's connection.
    fn send(&self, raw: Bytes, header: &MediaHeader) -> Result<(), Drop> {
        match &self.to {
            LinkTx::Quic(conn) => {
                quinn::Connection::send_datagram(conn, raw).map_err(|_| Drop::SendFailed)
            }
            LinkTx::Ws(queue) => queue.push(raw, header),
        }
    }
}

/// The per-connection half of the forwarder: the session's media budget and route.
pub struct Forwarder {
    budget: TokenBucket,
    route: Route,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// `kbps`: the session's media cap. One second of it is the burst: enough for a
    /// keyframe at that bitrate.
    pub fn new(route: Route, metrics: Arc<Metrics>, kbps: u32) -> Self {
        let bytes_per_s = f64::from(kbps) * 1000.0 / 8.0;
        Self {
            budget: TokenBucket::new(bytes_per_s, bytes_per_s, Instant::now()),
            route,
            metrics,
        }
    }

    /// One datagram read from the client (`raw` starts with the prefix): checked and
    /// handed to the partner's connection, or dropped and counted.
    pub fn forward(&mut self, raw: Bytes) {
        let metrics = &self.metrics;
        metrics.datagrams_received.fetch_add(1, Relaxed);
        // Every byte received is charged, well-formed or not: a flood of garbage costs the
        // relay as much to read as a flood of media.
        if !self.budget.try_take(raw.len() as f64, Instant::now()) {
            metrics.dropped(Drop::RateLimited);
            return;
        }
        let Some((&DATAGRAM_PREFIX, payload)) = raw.split_first() else {
            // Empty, or for a WebTransport session that does not exist.
            metrics.dropped(Drop::Malformed);
            return;
        };
        if payload.len() > MAX_MEDIA_DATAGRAM_BYTES {
            metrics.dropped(Drop::TooLarge);
            return;
        }
        let Ok((header, _)) = MediaHeader::read(payload) else {
            metrics.dropped(Drop::Malformed);
            return;
        };
        let match_id = header.match_id;
        let partner = {
            let guard = self.route.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                None => Err(Drop::NoPartner),
                Some((m, _)) if *m != match_id => Err(Drop::StaleMatch),
                Some((_, peer)) => Ok(peer.clone()),
            }
        };
        let len = payload.len() as u64;
        let sent = partner.and_then(|peer| {
            // The partner's connection now: swapped in one step when it resumes.
            let to = peer.link().ok_or(Drop::PartnerAway)?;
            to.send(raw, &header)?;
            to.counts.queued.fetch_add(1, Relaxed);
            Ok(len)
        });
        match sent {
            Ok(len) => {
                metrics.datagrams_queued.fetch_add(1, Relaxed);
                metrics.bytes_forwarded.fetch_add(len, Relaxed);
            }
            Err(why) => metrics.dropped(why),
        }
    }
}

/// The forwarding hot path for one connection of one session. Ends when the connection
/// closes.
///
/// This task is the only reader of the connection's datagrams, so none is taken from
/// under it.
pub async fn forward_media(link: Arc<Link>, conn: Connection, mut fwd: Forwarder) {
    while let Ok(raw) = quinn::Connection::read_datagram(&conn).await {
        link.counts.read.fetch_add(1, Relaxed);
        fwd.forward(raw);
    }
}
