//! The floor: the cheapest thing that can move the benchmark's media between two
//! partners. A plain UDP forwarder with no encryption, no QUIC and no async runtime: one
//! thread, one socket, `recv_from` then `send_to`. It routes the way the relay does, by the
//! media header's leading match id ([`peek_match_id`]): the first two source addresses
//! seen with a match id are that pairing's two ends, and each datagram goes to the other.
//!
//! The benchmark runs it as a separate process (`duet-bench floor-forwarder`) with the
//! relay's socket buffer size, and reads its CPU time from the OS exactly as the relay's,
//! so the relay's cost can be stated as a multiple of this floor.
//!
//! The parent asks for counters by writing `stats` on the child's stdin; the child answers
//! `forwarded=N bytes=M` on stdout. It exits when stdin closes or after `--max-seconds`.

use duet_proto::media::peek_match_id;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most pairings routed at once. A benchmark uses a few hundred; the bound keeps a stray
/// sender from growing the map.
pub const MAX_ROUTES: usize = 65_536;

/// How often the receive loop looks at the clock and the stop flag when no datagram comes.
const POLL: Duration = Duration::from_millis(200);

/// The two ends of one pairing, in the order they were first seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ends([Option<SocketAddr>; 2]);

/// Routing by match id, with no I/O: what the forwarder does with one datagram.
#[derive(Debug, Default)]
pub struct FloorRoutes {
    routes: HashMap<u64, Ends>,
}

impl FloorRoutes {
    /// Where a datagram with `match_id` from `from` goes, learning `from` as an end.
    pub fn route(&mut self, match_id: u64, from: SocketAddr) -> Option<SocketAddr> {
        if !self.routes.contains_key(&match_id) && self.routes.len() >= MAX_ROUTES {
            return None;
        }
        let ends = &mut self.routes.entry(match_id).or_default().0;
        match *ends {
            [Some(a), b] if a == from => b,
            [a, Some(b)] if b == from => a,
            [None, _] => {
                ends[0] = Some(from);
                None
            }
            [Some(a), None] => {
                ends[1] = Some(from);
                Some(a)
            }
            // A third address for a full pairing: not one of its ends.
            [Some(_), Some(_)] => None,
        }
    }
}

/// Runs the forwarder until stdin closes or `max` has passed. Prints
/// `floor-forwarder listening udp=ADDR` first.
pub fn run(listen: SocketAddr, socket_buffer: usize, max: Duration) -> std::io::Result<()> {
    let socket = sized_socket(listen, socket_buffer)?;
    socket.set_read_timeout(Some(POLL))?;
    let addr = socket.local_addr()?;
    let forwarded = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (forwarded, bytes, stop) = (forwarded.clone(), bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "stats" {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(
                        out,
                        "forwarded={} bytes={}",
                        forwarded.load(Relaxed),
                        bytes.load(Relaxed)
                    );
                    let _ = out.flush();
                }
            }
            stop.store(true, Relaxed);
        });
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "floor-forwarder listening udp={addr}")?;
        out.flush()?;
    }
    let deadline = Instant::now() + max;
    let mut routes = FloorRoutes::default();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Relaxed) && Instant::now() < deadline {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let datagram = &buf[..n];
        let Some(to) = peek_match_id(datagram).and_then(|m| routes.route(m, from)) else {
            continue;
        };
        // A full send buffer is a drop, as it is for the relay; the receiver counts it.
        if socket.send_to(datagram, to).is_ok() {
            forwarded.fetch_add(1, Relaxed);
            bytes.fetch_add(n as u64, Relaxed);
        }
    }
    Ok(())
}

/// A UDP socket with receive and send buffers asked for at `size` (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`), as the relay sizes its own.
pub fn sized_socket(addr: SocketAddr, size: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(size);
    let _ = socket.set_send_buffer_size(size);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn learns_both_ends_and_forwards_between_them() {
        let mut r = FloorRoutes::default();
        assert_eq!(r.route(7, addr(1)), None, "nobody to send to yet");
        assert_eq!(r.route(7, addr(1)), None);
        assert_eq!(r.route(7, addr(2)), Some(addr(1)));
        assert_eq!(r.route(7, addr(1)), Some(addr(2)));
        assert_eq!(r.route(7, addr(3)), None, "a third address is not an end");
        assert_eq!(r.route(8, addr(3)), None, "pairings are separate");
    }

    #[test]
    fn forwards_real_datagrams_between_two_sockets() {
        let fwd = sized_socket(addr(0), 1 << 20).expect("bind");
        let to = fwd.local_addr().expect("addr");
        fwd.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let a = UdpSocket::bind(addr(0)).expect("a");
        let b = UdpSocket::bind(addr(0)).expect("b");
        b.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut routes = FloorRoutes::default();
        let mut buf = [0u8; 64];
        // Match id 5 as a one-byte varint, then payload.
        for (sender, payload) in [
            (&a, &[5u8, 1][..]),
            (&b, &[5u8, 2][..]),
            (&a, &[5u8, 3][..]),
        ] {
            sender.send_to(payload, to).expect("send");
            let (n, from) = fwd.recv_from(&mut buf).expect("recv");
            if let Some(dest) = peek_match_id(&buf[..n]).and_then(|m| routes.route(m, from)) {
                fwd.send_to(&buf[..n], dest).expect("forward");
            }
        }
        let n = b.recv(&mut buf).expect("b gets a's second datagram");
        assert_eq!(&buf[..n], &[5, 3]);
    }
}
