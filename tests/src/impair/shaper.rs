//! The I/O half of the shaper: sockets, tasks and timers around two [`Link`]s.
//!
//! The shaper is a NAT-like UDP proxy. Clients send to the listen socket; for each client
//! address it opens a *flow*, a socket of its own connected to the upstream (the relay),
//! so the relay sees one distinct source port per client, exactly as behind a home router.
//! Replies on a flow's socket go back to its client from the listen socket.
//!
//! Tasks: one for the up direction (reads the listen socket, queues into the up link, sends
//! due packets on the flows' sockets), one for the down direction (sends due packets from
//! the listen socket), one small reader per flow (moves replies into the down link), and
//! one per scripted timeline. Each direction task sleeps until its link's next release time
//! and no longer; nothing polls on a fixed period except the idle-flow sweep.
//!
//! All decisions happen in the links, behind a `std::sync::Mutex` held for a few
//! microseconds and never across an `.await`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use super::link::{derive_seed, Blackout, Link};
use super::profile::{AddressChange, Profile, Step, TimedStep, Timeline, HANDOVER_BLACKOUT};
use super::stats::ShaperStats;

/// Most client flows at once. Each costs a socket (a file descriptor) and a reader task;
/// the benchmark runs at most a few hundred clients, and 4 096 stays well below the usual
/// 65 536 open-file limit even with the relay on the same machine.
pub const MAX_FLOWS: usize = 4096;

/// A flow with no packet either way for this long is closed, as a NAT forgets a mapping.
/// QUIC keeps paths alive far more often than this, so only departed clients expire.
pub const FLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often idle flows are looked for: a flow lives at most this much past its timeout.
const FLOW_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Receive buffer: the largest UDP payload, so no datagram is ever truncated. There is one
/// per direction, not one per flow.
const MAX_DATAGRAM: usize = 65_535;

/// Kernel receive and send buffer asked for on the listen socket. Every client's packets
/// land there, and the default (about 200 kB: under a hundred full-size datagrams once the
/// kernel's per-packet overhead is counted) overflowed in load tests while the up task
/// waited a few milliseconds for a core on a busy two-core machine; such drops happen
/// before the shaper can count them. The kernel caps the request at `net.core.rmem_max`
/// (and `wmem_max`) for unprivileged processes, which is fine: this is a best effort.
const LISTEN_SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Kernel buffers asked for on each flow socket, which carries one client's downstream:
/// a second of a few Mbit/s of media arriving in one burst fits. The kernel only uses the
/// memory while datagrams wait, and the flow's reader drains them as they come.
const FLOW_SOCKET_BUFFER: usize = 1024 * 1024;

/// Due packets taken out of a link per lock. Large enough that a burst is sent in a few
/// rounds, small enough that the lock is never held for long.
const RELEASE_BATCH: usize = 256;

/// Datagrams a flow reader takes from its socket before giving other tasks a turn.
const READ_BATCH: usize = 64;

/// How long past a handover's blackout the blackout stays armed if the handover is
/// abandoned half-way (its future dropped): the link then comes back by itself.
const HANDOVER_GRACE: Duration = Duration::from_secs(1);

/// Client → upstream is up; upstream → client is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    /// Keeps the two directions' random streams apart even when they share a seed.
    fn seed(self, seed: u64) -> u64 {
        derive_seed(
            seed,
            match self {
                Direction::Up => 0x7570,
                Direction::Down => 0x646f_776e,
            },
        )
    }
}

/// What [`Shaper::start`] needs.
#[derive(Debug, Clone)]
pub struct ShaperConfig {
    /// Where clients send; port 0 picks a free one ([`ShaperHandle::local_addr`] tells).
    pub listen: SocketAddr,
    /// The relay.
    pub upstream: SocketAddr,
    /// Impairments client → upstream.
    pub up: Profile,
    /// Impairments upstream → client.
    pub down: Profile,
    /// Seed of every random decision, unless a profile carries its own. Each direction
    /// derives its own streams from it, so the same seed gives the same drops for the
    /// same packet sequence.
    pub seed: u64,
}

impl ShaperConfig {
    /// The same profile both ways, seed 0.
    pub fn new(listen: SocketAddr, upstream: SocketAddr, profile: Profile) -> Self {
        Self {
            listen,
            upstream,
            up: profile.clone(),
            down: profile,
            seed: 0,
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShaperError {
    #[error("the shaper needs a tokio runtime to run on")]
    NoRuntime,
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("no other local address toward {upstream}: address changes need an IPv4 loopback upstream (127.0.0.0/8 is all local)")]
    NoOtherAddress { upstream: SocketAddr },
    #[error("cannot open a socket toward the upstream {upstream}")]
    Upstream {
        upstream: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The userspace UDP shaper. See the [module docs](self) for how it is built.
///
/// Timelines: the up profile's timeline runs from the start, and so does the down
/// profile's unless it is the same one (the common case of one profile both ways). Steps
/// act on the whole link. Profiles set later (by a step or a handle) never start a timeline.
pub struct Shaper;

impl Shaper {
    /// Binds the listen socket and starts forwarding. The shaper runs until the returned
    /// handle is dropped or shut down.
    pub async fn start(config: ShaperConfig) -> Result<ShaperHandle, ShaperError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ShaperError::NoRuntime)?;
        let listen_error = |source| ShaperError::Listen {
            addr: config.listen,
            source,
        };
        let listen = udp_socket(config.listen, LISTEN_SOCKET_BUFFER)
            .and_then(UdpSocket::from_std)
            .map_err(listen_error)?;
        let local_addr = listen.local_addr().map_err(listen_error)?;

        let mut timelines: Vec<Timeline> = Vec::new();
        if !config.up.timeline.is_empty() {
            timelines.push(config.up.timeline.clone());
        }
        if !config.down.timeline.is_empty() && config.down.timeline != config.up.timeline {
            timelines.push(config.down.timeline.clone());
        }
        let up_seed = Direction::Up.seed(config.up.seed.unwrap_or(config.seed));
        let down_seed = Direction::Down.seed(config.down.seed.unwrap_or(config.seed));
        let inner = Arc::new(Inner {
            listen,
            local_addr,
            upstream: config.upstream,
            upstream_bind: Mutex::new(bind_address_toward(config.upstream)),
            up: Mutex::new(Link::new(config.up, up_seed)),
            down: Mutex::new(DownState {
                link: Link::new(config.down, down_seed),
                scratch: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            }),
            down_wake: Notify::new(),
            flows: Mutex::new(HashMap::new()),
            rebinds: AtomicU64::new(0),
            address_changes: AtomicU64::new(0),
            handovers: AtomicU64::new(0),
            started: Instant::now(),
            runtime,
        });

        let mut tasks = JoinSet::new();
        tasks.spawn(run_up(inner.clone()));
        tasks.spawn(run_down(inner.clone()));
        for timeline in timelines {
            tasks.spawn(run_timeline(inner.clone(), timeline));
        }
        tracing::debug!(listen = %local_addr, upstream = %config.upstream, "shaper started");
        Ok(ShaperHandle { inner, tasks })
    }
}

/// Control of a running shaper. Dropping it stops the shaper.
pub struct ShaperHandle {
    inner: Arc<Inner>,
    /// The direction and timeline tasks; dropping the set aborts them.
    tasks: JoinSet<()>,
}

impl ShaperHandle {
    /// Where clients should send.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.inner.upstream
    }

    pub fn stats(&self) -> ShaperStats {
        self.inner.stats()
    }

    /// The profile currently applied to `direction`.
    pub fn profile(&self, direction: Direction) -> Profile {
        match direction {
            Direction::Up => lock(&self.inner.up).profile().clone(),
            Direction::Down => lock(&self.inner.down).link.profile().clone(),
        }
    }

    /// Replaces the impairments of one direction from now on. Packets already queued keep
    /// their release times. A profile with its own seed restarts that direction's random
    /// streams from it; its timeline does not run.
    pub fn set_profile(&self, direction: Direction, profile: Profile) {
        self.inner.set_profile(direction, profile);
    }

    /// Replaces the impairments of both directions.
    pub fn set_profiles(&self, profile: Profile) {
        self.inner.set_profiles(profile);
    }

    /// The bottleneck rate of `direction` now, bit/s (`None`: the profile has none).
    pub fn capacity(&self, direction: Direction) -> Option<u64> {
        let now = std::time::Instant::now();
        match direction {
            Direction::Up => lock(&self.inner.up).rate_at(now),
            Direction::Down => lock(&self.inner.down).link.rate_at(now),
        }
        .map(|r| r.bits_per_second)
    }

    /// Starts (`true`) or ends (`false`) a blackout of both directions.
    pub fn blackout(&self, on: bool) {
        self.inner
            .set_blackout(if on { Blackout::On } else { Blackout::Off });
    }

    /// Blacks out both directions for `duration` from now.
    pub fn blackout_for(&self, duration: Duration) {
        self.inner.blackout_for(duration);
    }

    /// Moves every flow to a new source port toward the upstream, as a NAT rebinding does:
    /// the old sockets are closed, so replies to them are lost. Returns how many flows moved.
    pub fn rebind(&self) -> Result<usize, ShaperError> {
        self.inner.rebind(AddressChange::Port)
    }

    /// Moves every flow to the next local address (`127.0.0.2`, `127.0.0.3`, … for a
    /// loopback upstream) and a new port, as a phone joining another network does.
    /// Returns how many flows moved.
    pub fn change_address(&self) -> Result<usize, ShaperError> {
        self.inner.rebind(AddressChange::Ip)
    }

    /// The local address flows toward the upstream are bound to now.
    pub fn source_ip(&self) -> IpAddr {
        lock(&self.inner.upstream_bind).ip()
    }

    /// Changes networks to [`Profile::cellular`]; see [`handover_to`](Self::handover_to).
    pub async fn handover(&self) -> Result<(), ShaperError> {
        self.handover_to(Profile::cellular()).await
    }

    /// Changes networks as a phone does: a [`HANDOVER_BLACKOUT`] on both directions, then a
    /// rebinding, then `to` on both directions. Returns once traffic flows again. If this
    /// future is dropped half-way, the blackout still ends shortly after.
    pub async fn handover_to(&self, to: Profile) -> Result<(), ShaperError> {
        self.inner
            .handover(HANDOVER_BLACKOUT, to, AddressChange::Port)
            .await
    }

    /// [`handover_to`](Self::handover_to), with the address changing as `change` says.
    pub async fn handover_with(
        &self,
        to: Profile,
        change: AddressChange,
    ) -> Result<(), ShaperError> {
        self.inner.handover(HANDOVER_BLACKOUT, to, change).await
    }

    /// Stops every task and closes every socket, and returns once they are closed.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        lock(&self.inner.flows).clear();
    }
}

impl Drop for ShaperHandle {
    fn drop(&mut self) {
        self.tasks.abort_all();
        // Dropping the flows aborts their readers and closes their sockets now rather than
        // when the aborted tasks are next polled.
        lock(&self.inner.flows).clear();
    }
}

struct Inner {
    listen: UdpSocket,
    local_addr: SocketAddr,
    upstream: SocketAddr,
    /// Local address for flow sockets: loopback for a loopback upstream, so the shaper
    /// never listens on a public interface unasked; otherwise any address of the family.
    /// An address change moves it to the next loopback address.
    upstream_bind: Mutex<SocketAddr>,
    up: Mutex<Link<SocketAddr>>,
    down: Mutex<DownState>,
    /// Told when a flow reader queued a packet due before anything else in the down link.
    down_wake: Notify,
    flows: Mutex<HashMap<SocketAddr, Flow>>,
    rebinds: AtomicU64,
    address_changes: AtomicU64,
    handovers: AtomicU64,
    started: Instant,
    /// Lets `rebind` open sockets and spawn readers from any thread.
    runtime: tokio::runtime::Handle,
}

/// The down link and the one receive buffer all flow readers share, under one lock.
struct DownState {
    link: Link<SocketAddr>,
    scratch: Box<[u8]>,
}

/// One client's mapping toward the upstream.
struct Flow {
    socket: Arc<UdpSocket>,
    /// Dropped (and so stopped) with the flow or when the flow is rebound.
    _reader: ReaderGuard,
    /// Milliseconds since the shaper started, at the last packet either way.
    last_active: Arc<AtomicU64>,
}

/// Aborts a flow's reader task when dropped.
struct ReaderGuard(AbortHandle);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A poisoned lock only means another thread panicked while holding it; the link inside is
/// still consistent enough to keep forwarding, which beats taking the whole shaper down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bind_address_toward(upstream: SocketAddr) -> SocketAddr {
    let ip: IpAddr = match upstream.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(ip) if ip.is_loopback() => Ipv6Addr::LOCALHOST.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

/// The loopback address after `ip` (127.0.0.1 → 127.0.0.2 → … → 127.0.0.254 → 127.0.0.1),
/// or `None` when `ip` is not IPv4 loopback: only there are other local addresses certain
/// to exist (IPv6 has one loopback address).
fn next_loopback(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let last = v4.octets()[3];
            let next = if last >= 254 { 1 } else { last + 1 };
            Some(Ipv4Addr::new(127, 0, 0, next).into())
        }
        _ => None,
    }
}

/// A non-blocking UDP socket bound to `addr`, with kernel buffers of (at most) `buffer`.
fn udp_socket(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer than asked only means the kernel drops sooner under a
    // burst, which the shaper survives.
    if let Err(error) = socket
        .set_recv_buffer_size(buffer)
        .and_then(|()| socket.set_send_buffer_size(buffer))
    {
        tracing::debug!(error = %error, "cannot enlarge socket buffers");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Receive errors that say nothing about the socket itself: an ICMP error from an earlier
/// send (reported on the next receive), or an interrupted call.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
    )
}

impl Inner {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn stats(&self) -> ShaperStats {
        ShaperStats {
            elapsed_ms: self.elapsed_ms(),
            up: lock(&self.up).stats(),
            down: lock(&self.down).link.stats(),
            flows: lock(&self.flows).len() as u64,
            rebinds: self.rebinds.load(Relaxed),
            address_changes: self.address_changes.load(Relaxed),
            source_ip: Some(lock(&self.upstream_bind).ip()),
            handovers: self.handovers.load(Relaxed),
        }
    }

    fn set_profile(&self, direction: Direction, profile: Profile) {
        let seed = profile.seed.map(|seed| direction.seed(seed));
        let apply = |link: &mut Link<SocketAddr>| {
            if let Some(seed) = seed {
                link.reseed(seed);
            }
            link.set_profile(profile);
        };
        match direction {
            Direction::Up => apply(&mut lock(&self.up)),
            Direction::Down => apply(&mut lock(&self.down).link),
        }
    }

    fn set_profiles(&self, profile: Profile) {
        self.set_profile(Direction::Up, profile.clone());
        self.set_profile(Direction::Down, profile);
    }

    fn set_blackout(&self, blackout: Blackout) {
        lock(&self.up).set_blackout(blackout);
        lock(&self.down).link.set_blackout(blackout);
    }

    fn blackout_for(&self, duration: Duration) {
        let now = Instant::now().into_std();
        // A window too long to represent is the same as one that never ends.
        self.set_blackout(
            now.checked_add(duration)
                .map_or(Blackout::On, Blackout::Until),
        );
    }

    async fn handover(
        self: &Arc<Self>,
        blackout: Duration,
        to: Profile,
        change: AddressChange,
    ) -> Result<(), ShaperError> {
        self.blackout_for(blackout.saturating_add(HANDOVER_GRACE));
        let end = Instant::now()
            .checked_add(blackout)
            .unwrap_or_else(Instant::now);
        tokio::time::sleep_until(end).await;
        // The new network comes up with its new address and its own conditions at once, so
        // nothing slips through on the old port or with the old profile in between.
        let rebound = self.rebind(change);
        self.set_profiles(to);
        self.set_blackout(Blackout::Off);
        self.handovers.fetch_add(1, Relaxed);
        rebound.map(|_| ())
    }

    fn rebind(self: &Arc<Self>, change: AddressChange) -> Result<usize, ShaperError> {
        if change == AddressChange::Ip {
            let mut bind = lock(&self.upstream_bind);
            let next = next_loopback(bind.ip()).ok_or(ShaperError::NoOtherAddress {
                upstream: self.upstream,
            })?;
            *bind = SocketAddr::new(next, 0);
            self.address_changes.fetch_add(1, Relaxed);
        }
        let mut flows = lock(&self.flows);
        let mut moved = 0;
        for (client, flow) in flows.iter_mut() {
            let (socket, reader) = self.open_upstream(*client, flow.last_active.clone())?;
            flow.socket = socket;
            flow._reader = reader;
            moved += 1;
        }
        self.rebinds.fetch_add(1, Relaxed);
        tracing::debug!(flows = moved, "rebound");
        Ok(moved)
    }

    /// Opens a socket toward the upstream for `client` and starts its reader.
    fn open_upstream(
        self: &Arc<Self>,
        client: SocketAddr,
        last_active: Arc<AtomicU64>,
    ) -> Result<(Arc<UdpSocket>, ReaderGuard), ShaperError> {
        let error = |source| ShaperError::Upstream {
            upstream: self.upstream,
            source,
        };
        let bind = *lock(&self.upstream_bind);
        let socket = udp_socket(bind, FLOW_SOCKET_BUFFER).map_err(error)?;
        // Connected, so the kernel only hands this socket datagrams from the upstream.
        socket.connect(self.upstream).map_err(error)?;
        let _runtime = self.runtime.enter();
        let socket = Arc::new(UdpSocket::from_std(socket).map_err(error)?);
        let reader = self.runtime.spawn(read_upstream(
            Arc::downgrade(self),
            socket.clone(),
            client,
            last_active,
        ));
        Ok((socket, ReaderGuard(reader.abort_handle())))
    }

    /// A datagram from a client: find or open its flow, then offer it to the up link.
    fn client_packet(self: &Arc<Self>, client: SocketAddr, payload: &[u8]) {
        let now = Instant::now().into_std();
        let routed = self.touch_flow(client);
        let mut up = lock(&self.up);
        if routed {
            up.offer(now, client, payload);
        } else {
            up.refuse_without_flow(payload.len());
        }
    }

    fn touch_flow(self: &Arc<Self>, client: SocketAddr) -> bool {
        let now = self.elapsed_ms();
        let mut flows = lock(&self.flows);
        if let Some(flow) = flows.get(&client) {
            flow.last_active.store(now, Relaxed);
            return true;
        }
        if flows.len() >= MAX_FLOWS {
            tracing::debug!(%client, "flow table full; dropping");
            return false;
        }
        let last_active = Arc::new(AtomicU64::new(now));
        match self.open_upstream(client, last_active.clone()) {
            Ok((socket, reader)) => {
                flows.insert(
                    client,
                    Flow {
                        socket,
                        _reader: reader,
                        last_active,
                    },
                );
                true
            }
            Err(error) => {
                tracing::warn!(%client, error = %error, "cannot open a flow");
                false
            }
        }
    }

    fn expire_flows(&self) {
        let now = self.elapsed_ms();
        let idle = u64::try_from(FLOW_IDLE_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        lock(&self.flows)
            .retain(|_, flow| now.saturating_sub(flow.last_active.load(Relaxed)) < idle);
    }

    /// Sends every due up packet on its flow's current socket.
    async fn release_up(
        &self,
        ready: &mut Vec<(SocketAddr, Bytes)>,
        sends: &mut Vec<(Arc<UdpSocket>, Bytes)>,
    ) {
        loop {
            let moved = lock(&self.up).pop_ready(Instant::now().into_std(), ready, RELEASE_BATCH);
            let mut no_flow = 0;
            {
                let flows = lock(&self.flows);
                for (client, payload) in ready.drain(..) {
                    match flows.get(&client) {
                        Some(flow) => sends.push((flow.socket.clone(), payload)),
                        None => no_flow += 1,
                    }
                }
            }
            let (mut packets, mut bytes, mut errors) = (0, 0, 0);
            for (socket, payload) in sends.drain(..) {
                match socket.send(&payload).await {
                    Ok(_) => {
                        packets += 1;
                        bytes += payload.len() as u64;
                    }
                    Err(error) => {
                        errors += 1;
                        tracing::trace!(error = %error, "send upstream failed");
                    }
                }
            }
            let mut up = lock(&self.up);
            up.record_forwarded(packets, bytes);
            up.record_send_errors(errors);
            up.record_no_flow(no_flow);
            if moved < RELEASE_BATCH {
                return;
            }
        }
    }

    /// Sends every due down packet to its client.
    async fn release_down(&self, ready: &mut Vec<(SocketAddr, Bytes)>) {
        loop {
            let moved =
                lock(&self.down)
                    .link
                    .pop_ready(Instant::now().into_std(), ready, RELEASE_BATCH);
            let (mut packets, mut bytes, mut errors) = (0, 0, 0);
            for (client, payload) in ready.drain(..) {
                match self.listen.send_to(&payload, client).await {
                    Ok(_) => {
                        packets += 1;
                        bytes += payload.len() as u64;
                    }
                    Err(error) => {
                        errors += 1;
                        tracing::trace!(%client, error = %error, "send to client failed");
                    }
                }
            }
            let mut down = lock(&self.down);
            down.link.record_forwarded(packets, bytes);
            down.link.record_send_errors(errors);
            if moved < RELEASE_BATCH {
                return;
            }
        }
    }

    /// Moves what is waiting on a flow's socket into the down link. Returns false once the
    /// socket is broken for good.
    fn upstream_packets(
        &self,
        socket: &UdpSocket,
        client: SocketAddr,
        last_active: &AtomicU64,
    ) -> bool {
        let now = Instant::now().into_std();
        let mut down = lock(&self.down);
        let DownState { link, scratch } = &mut *down;
        let before = link.next_release();
        let mut received = false;
        let mut healthy = true;
        for _ in 0..READ_BATCH {
            match socket.try_recv(scratch) {
                Ok(len) => {
                    received = true;
                    link.offer(now, client, scratch.get(..len).unwrap_or_default());
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if is_transient(&error) => continue,
                Err(error) => {
                    tracing::debug!(%client, error = %error, "flow socket failed");
                    healthy = false;
                    break;
                }
            }
        }
        let after = link.next_release();
        drop(down);
        if received {
            last_active.store(self.elapsed_ms(), Relaxed);
        }
        // The down task sleeps until the earliest release it knew of; only a packet due
        // sooner than that needs to wake it.
        if after.is_some() && (before.is_none() || after < before) {
            self.down_wake.notify_one();
        }
        healthy
    }
}

/// The up direction: client datagrams in, due packets out to the upstream.
async fn run_up(inner: Arc<Inner>) {
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    let mut ready = Vec::with_capacity(RELEASE_BATCH);
    let mut sends = Vec::with_capacity(RELEASE_BATCH);
    let mut sweep = tokio::time::interval(FLOW_SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        let next = lock(&inner.up).next_release().map(Instant::from_std);
        if let Some(next) = next {
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
        }
        tokio::select! {
            received = inner.listen.recv_from(&mut scratch) => match received {
                Ok((len, client)) => inner.client_packet(client, scratch.get(..len).unwrap_or_default()),
                Err(error) if is_transient(&error) => {}
                Err(error) => {
                    tracing::error!(error = %error, "the listen socket failed; the shaper stops");
                    return;
                }
            },
            () = &mut timer, if next.is_some() => inner.release_up(&mut ready, &mut sends).await,
            _ = sweep.tick() => inner.expire_flows(),
        }
    }
}

/// The down direction: due packets out to the clients. Flow readers fill the link.
async fn run_down(inner: Arc<Inner>) {
    let mut ready = Vec::with_capacity(RELEASE_BATCH);
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        let next = lock(&inner.down).link.next_release().map(Instant::from_std);
        if let Some(next) = next {
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
        }
        tokio::select! {
            () = inner.down_wake.notified() => {}
            () = &mut timer, if next.is_some() => inner.release_down(&mut ready).await,
        }
    }
}

/// One flow's reader. It holds the shaper weakly so that a forgotten reader cannot keep a
/// stopped shaper alive.
async fn read_upstream(
    inner: Weak<Inner>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    last_active: Arc<AtomicU64>,
) {
    loop {
        if let Err(error) = socket.readable().await {
            tracing::debug!(%client, error = %error, "flow socket failed");
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        if !inner.upstream_packets(&socket, client, &last_active) {
            return;
        }
    }
}

/// Plays a timeline, repeating it if asked.
async fn run_timeline(inner: Arc<Inner>, timeline: Timeline) {
    let mut steps = timeline.steps;
    steps.sort_by_key(|step| step.at);
    // A zero period, or a repeating timeline with nothing in it, would spin.
    let period = timeline
        .repeat_every
        .filter(|period| !period.is_zero() && !steps.is_empty());
    let mut cycle = inner.started;
    loop {
        for TimedStep { at, step } in &steps {
            let Some(when) = cycle.checked_add(*at) else {
                return;
            };
            tokio::time::sleep_until(when).await;
            perform(&inner, step).await;
        }
        match period.and_then(|period| cycle.checked_add(period)) {
            Some(next) => cycle = next,
            None => return,
        }
    }
}

async fn perform(inner: &Arc<Inner>, step: &Step) {
    let result = match step {
        Step::Blackout(duration) => {
            inner.blackout_for(*duration);
            Ok(())
        }
        Step::Rebind => inner.rebind(AddressChange::Port).map(|_| ()),
        Step::Switch(profile) => {
            inner.set_profiles(Profile::clone(profile));
            Ok(())
        }
        Step::Handover {
            blackout,
            to,
            change,
        } => inner.handover(*blackout, Profile::clone(to), *change).await,
    };
    if let Err(error) = result {
        tracing::warn!(?step, error = %error, "timeline step failed");
    }
}
