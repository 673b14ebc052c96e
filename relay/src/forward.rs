//! The datagram path, nothing else: read a datagram from one client, check its size,
//! header and match id against the session's [`Route`], hand the same bytes to the
//! partner's current connection.
//!
//! No global lock: the only shared state is this session's route (a per-session lock) and
//! the partner's [`Peer`] connection slot (another per-session lock), each held only to
//! clone an `Arc`.

use crate::limits::TokenBucket;
use crate::matching::MatchId;
use crate::metrics::{Drop, Metrics};
use crate::peer::Peer;
use crate::Connection;
use duet_proto::limits::MAX_MEDIA_DATAGRAM_BYTES;
use duet_proto::media::peek_match_id;
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
const DATAGRAM_PREFIX: u8 = 0;

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
    pub conn: Connection,
    pub counts: DatagramCounts,
}

/// The forwarding hot path for one connection of one session. Ends when the connection
/// closes.
///
/// This task is the only reader of the connection's datagrams, so none is taken from
/// under it.
pub async fn forward_media(link: Arc<Link>, route: Route, metrics: Arc<Metrics>, kbps: u32) {
    // One second of the allowed rate as burst: enough for a keyframe at that bitrate.
    let bytes_per_s = f64::from(kbps) * 1000.0 / 8.0;
    let mut budget = TokenBucket::new(bytes_per_s, bytes_per_s, Instant::now());
    loop {
        let Ok(raw) = quinn::Connection::read_datagram(&link.conn).await else {
            break;
        };
        link.counts.read.fetch_add(1, Relaxed);
        metrics.datagrams_received.fetch_add(1, Relaxed);
        // Every byte received is charged, well-formed or not: a flood of garbage costs the
        // relay as much to read as a flood of media.
        if !budget.try_take(raw.len() as f64, Instant::now()) {
            metrics.dropped(Drop::RateLimited);
            continue;
        }
        let Some((&DATAGRAM_PREFIX, payload)) = raw.split_first() else {
            // Empty, or for a WebTransport session that does not exist.
            metrics.dropped(Drop::Malformed);
            continue;
        };
        if payload.len() > MAX_MEDIA_DATAGRAM_BYTES {
            metrics.dropped(Drop::TooLarge);
            continue;
        }
        if MediaHeader::read(payload).is_err() {
            metrics.dropped(Drop::Malformed);
            continue;
        }
        let Some(match_id) = peek_match_id(payload) else {
            metrics.dropped(Drop::Malformed);
            continue;
        };
        let partner = {
            let guard = route.lock().unwrap_or_else(|e| e.into_inner());
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
            quinn::Connection::send_datagram(&to.conn, raw).map_err(|_| Drop::SendFailed)?;
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
