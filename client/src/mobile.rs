//! Moving a live call to a new UDP socket, as a phone app does when the OS reports a new
//! network (Wi-Fi to cellular).
//!
//! The QUIC stack under wtransport binds its socket privately, so the client puts a small
//! in-process UDP hop in front of it: the QUIC endpoint talks to a loopback socket, and
//! the hop carries the packets to the relay from an *outer* socket. [`MobileSocket::migrate`]
//! opens a new outer socket and drops the old one, so the relay sees the same connection
//! arrive from a new address and port; quinn on the relay validates the new path and
//! follows it (nothing in the relay is keyed by address). [`MobileSocket::migrate_to`]
//! binds the new outer socket to a given local address, as a phone binds to the new
//! network's interface: the relay then sees a new IP, which quinn treats as a new path
//! (validated, with fresh RTT and congestion state), not as a NAT rebinding.
//!
//! Cost: one extra loopback hop per packet on the client, no extra copy beyond the
//! kernel's. Bounded: one buffer, no queue (a packet that cannot be sent is dropped, as
//! the network would).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Largest UDP payload carried (QUIC packets are at most ~1500 on real paths; loopback
/// MTU discovery can go higher, so allow the full UDP size).
const MAX_PACKET: usize = 65_535;

type MigrateReply = oneshot::Sender<std::io::Result<SocketAddr>>;

/// A move: where to bind the new outer socket (`None`: the same kind of address as
/// before), and where to say how it went.
type Migrate = (Option<IpAddr>, MigrateReply);

/// The in-process hop. Dropping it stops the hop (and with it the connection's path).
#[derive(Debug)]
pub struct MobileSocket {
    inner_addr: SocketAddr,
    migrate_tx: mpsc::Sender<Migrate>,
    task: tokio::task::JoinHandle<()>,
}

fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

async fn outer_socket(upstream: SocketAddr, local: Option<IpAddr>) -> std::io::Result<UdpSocket> {
    let bind = match local {
        Some(ip) if ip.is_ipv4() != upstream.is_ipv4() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{ip} cannot reach {upstream} (another address family)"),
            ))
        }
        Some(ip) => SocketAddr::new(ip, 0),
        None if upstream.ip().is_loopback() => SocketAddr::new(upstream.ip(), 0),
        None => unspecified_for(upstream),
    };
    UdpSocket::bind(bind).await
}

impl MobileSocket {
    /// Starts a hop toward `upstream` (the relay's QUIC address).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let loopback = if upstream.is_ipv4() {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 0))
        };
        let inner = UdpSocket::bind(loopback).await?;
        let inner_addr = inner.local_addr()?;
        let outer = outer_socket(upstream, None).await?;
        let (migrate_tx, migrate_rx) = mpsc::channel(4);
        let task = tokio::spawn(run(Arc::new(inner), outer, upstream, migrate_rx));
        Ok(Self {
            inner_addr,
            migrate_tx,
            task,
        })
    }

    /// Where the QUIC endpoint should send: the hop's loopback side.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner_addr
    }

    /// Moves to a new outer socket on the same local address (a new port). Returns the
    /// new source address the relay will see.
    pub async fn migrate(&self) -> std::io::Result<SocketAddr> {
        self.send_migrate(None).await
    }

    /// Moves to a new outer socket bound to `local` (a new network's address). Returns
    /// the new source address the relay will see. The old socket stays in use when
    /// `local` cannot be bound.
    pub async fn migrate_to(&self, local: IpAddr) -> std::io::Result<SocketAddr> {
        self.send_migrate(Some(local)).await
    }

    async fn send_migrate(&self, local: Option<IpAddr>) -> std::io::Result<SocketAddr> {
        let (tx, rx) = oneshot::channel();
        let gone = || std::io::Error::other("the mobile socket has stopped");
        self.migrate_tx
            .send((local, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

impl Drop for MobileSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    inner: Arc<UdpSocket>,
    mut outer: UdpSocket,
    upstream: SocketAddr,
    mut migrate_rx: mpsc::Receiver<Migrate>,
) {
    let mut from_app = vec![0u8; MAX_PACKET];
    let mut from_net = vec![0u8; MAX_PACKET];
    // The QUIC endpoint's address, learnt from its first packet.
    let mut app: Option<SocketAddr> = None;
    loop {
        tokio::select! {
            r = inner.recv_from(&mut from_app) => {
                let Ok((n, src)) = r else { continue };
                app = Some(src);
                // A full send buffer drops the packet, as a congested network would.
                let _ = outer.send_to(&from_app[..n], upstream).await;
            }
            r = outer.recv_from(&mut from_net) => {
                let Ok((n, src)) = r else { continue };
                if src != upstream {
                    continue; // only the relay talks to us
                }
                if let Some(app) = app {
                    let _ = inner.send_to(&from_net[..n], app).await;
                }
            }
            cmd = migrate_rx.recv() => {
                let Some((local, reply)) = cmd else { return };
                let result = match outer_socket(upstream, local).await {
                    Ok(new) => {
                        let addr = new.local_addr();
                        outer = new; // the old socket closes here: its packets are gone
                        addr
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn migrating_changes_the_source_the_upstream_sees_and_replies_still_arrive() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let hop = MobileSocket::start(server.local_addr().expect("addr"))
            .await
            .expect("hop");
        let app = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mut buf = [0u8; 64];
        let mut sources = Vec::new();
        for round in 0..2u8 {
            app.send_to(&[round], hop.local_addr()).await.expect("send");
            let (n, src) =
                tokio::time::timeout(Duration::from_secs(10), server.recv_from(&mut buf))
                    .await
                    .expect("in time")
                    .expect("recv");
            assert_eq!(&buf[..n], &[round]);
            sources.push(src);
            server.send_to(&[round + 10], src).await.expect("reply");
            let (n, _) = tokio::time::timeout(Duration::from_secs(10), app.recv_from(&mut buf))
                .await
                .expect("in time")
                .expect("recv");
            assert_eq!(&buf[..n], &[round + 10]);
            if round == 0 {
                let new = hop.migrate().await.expect("migrates");
                assert_ne!(new, src);
            }
        }
        assert_ne!(
            sources[0], sources[1],
            "the upstream sees a new source address"
        );
    }

    #[tokio::test]
    async fn migrating_to_another_local_address_changes_the_source_ip() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let hop = MobileSocket::start(server.local_addr().expect("addr"))
            .await
            .expect("hop");
        let app = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mut buf = [0u8; 64];
        let mut seen = Vec::new();
        for (round, ip) in [[127, 0, 0, 2], [127, 0, 0, 3]].into_iter().enumerate() {
            let moved = hop.migrate_to(IpAddr::from(ip)).await.expect("migrates");
            assert_eq!(moved.ip(), IpAddr::from(ip));
            app.send_to(&[round as u8], hop.local_addr())
                .await
                .expect("send");
            let (n, src) =
                tokio::time::timeout(Duration::from_secs(10), server.recv_from(&mut buf))
                    .await
                    .expect("in time")
                    .expect("recv");
            assert_eq!((&buf[..n], src), (&[round as u8][..], moved));
            server.send_to(b"back", src).await.expect("reply");
            let (n, _) = tokio::time::timeout(Duration::from_secs(10), app.recv_from(&mut buf))
                .await
                .expect("in time")
                .expect("recv");
            assert_eq!(&buf[..n], b"back");
            seen.push(src.ip());
        }
        assert_eq!(
            seen,
            [IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3])]
        );
        // An address of the other family is refused, and the call stays where it was.
        let err = hop
            .migrate_to(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
            .await
            .expect_err("IPv6 cannot reach an IPv4 relay");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        app.send_to(&[9], hop.local_addr()).await.expect("send");
        let (_, src) = tokio::time::timeout(Duration::from_secs(10), server.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(src.ip(), IpAddr::from([127, 0, 0, 3]));
    }
}
