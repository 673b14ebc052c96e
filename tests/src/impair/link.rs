//! One direction of an impaired link, with no I/O: packets are offered with the time they
//! arrived, the [`Link`] decides each one's fate ([`Verdict`]) and keeps the delivered ones
//! in a delay line until their release time, and the caller pops whatever is due.
//!
//! The impairments compose in a fixed order: blackout, random loss, bursty loss,
//! duplication, then, for each copy, the rate limiter with its queue, delay plus jitter,
//! and reordering. Every random draw comes from a stream of its own (one for loss, one for
//! bursts, and so on), all derived from one seed: the random drops of a given packet
//! sequence are the same on every run and do not move when the timing, the jitter or the
//! duplication changes.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::model::{GilbertElliottState, JitterProcess, Pacer};
use super::profile::{clamp_probability, Profile, RateLimit, MAX_DELAY, WALK_QUEUE_BYTES};
use super::stats::{DirectionStats, DropReason};

/// Bytes of IPv4 and UDP header the rate limiter adds to each datagram, so that a rate means
/// what it means on a real link (where small packets cost more than their payload). IPv6
/// has 20 more; the difference is below what a profile's rate claims to model.
pub const WIRE_OVERHEAD_BYTES: u64 = 28;

/// Most packets one direction keeps queued (rate limiter and delay line together). The
/// benchmark pushes a few thousand packets per second through delays of at most a second
/// or two, so 65,536 is over ten times what it needs while bounding the heap.
pub const MAX_QUEUED_PACKETS: usize = 65_536;

/// Most payload bytes one direction keeps queued. 64 MiB covers MAX_QUEUED_PACKETS of
/// full-size (1 kB) media datagrams with room to spare and caps memory when a client sends
/// jumbo datagrams into a long delay.
pub const MAX_QUEUED_BYTES: u64 = 64 * 1024 * 1024;

/// Whether a blackout is in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Blackout {
    #[default]
    Off,
    /// Until switched off.
    On,
    /// Until this instant (exclusive).
    Until(Instant),
}

impl Blackout {
    pub fn is_active(&self, now: Instant) -> bool {
        match *self {
            Blackout::Off => false,
            Blackout::On => true,
            Blackout::Until(end) => now < end,
        }
    }
}

/// What happens to one copy of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Dropped(DropReason),
    /// Released at `at`; `held_back` says the reordering impairment delayed it on purpose.
    Delivered {
        at: Instant,
        held_back: bool,
    },
}

impl Fate {
    pub fn release(&self) -> Option<Instant> {
        match *self {
            Fate::Delivered { at, .. } => Some(at),
            Fate::Dropped(_) => None,
        }
    }
}

/// The decision for one offered packet: the original and, if it was duplicated, the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub original: Fate,
    pub duplicate: Option<Fate>,
}

impl Verdict {
    /// How many copies will come out: 0, 1 or 2.
    pub fn delivered(&self) -> usize {
        [Some(self.original), self.duplicate]
            .iter()
            .flatten()
            .filter(|f| f.release().is_some())
            .count()
    }

    /// Why the original was dropped, if it was.
    pub fn dropped(&self) -> Option<DropReason> {
        match self.original {
            Fate::Dropped(reason) => Some(reason),
            Fate::Delivered { .. } => None,
        }
    }
}

/// Random streams, one per impairment, so that turning one impairment on or off does not
/// shift the draws (and so the decisions) of the others.
struct Streams {
    loss: StdRng,
    burst: StdRng,
    duplicate: StdRng,
    jitter: StdRng,
    reorder: StdRng,
}

impl Streams {
    fn new(seed: u64) -> Self {
        let stream = |n: u64| StdRng::seed_from_u64(derive_seed(seed, n));
        Self {
            loss: stream(1),
            burst: stream(2),
            duplicate: stream(3),
            jitter: stream(4),
            reorder: stream(5),
        }
    }
}

/// Mixes `label` into `seed` (SplitMix64's finaliser), so that seeds derived from
/// neighbouring labels or neighbouring seeds share no structure.
pub fn derive_seed(seed: u64, label: u64) -> u64 {
    let mut z = seed ^ label.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A packet in the delay line. `seq` breaks ties so that packets due at the same instant
/// leave in the order they were queued.
struct Queued<T> {
    release: Instant,
    seq: u64,
    meta: T,
    payload: Bytes,
}

impl<T> PartialEq for Queued<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}

impl<T> Eq for Queued<T> {}

impl<T> PartialOrd for Queued<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Queued<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.release, self.seq).cmp(&(other.release, other.seq))
    }
}

/// One direction of the link. `T` is what the caller needs to send a packet on once it is
/// due (the shaper uses the client's address); the link only carries it along.
///
/// The link ignores [`Profile::seed`]: its owner picks the seed (see [`Link::new`] and
/// [`Link::reseed`]).
pub struct Link<T> {
    profile: Profile,
    streams: Streams,
    burst_state: GilbertElliottState,
    pacer: Pacer,
    jitter: JitterProcess,
    /// Release time of the last packet not held back; later packets never leave before it,
    /// which is what keeps jitter and profile changes from reordering.
    last_release: Option<Instant>,
    blackout: Blackout,
    /// When the profile's capacity trace started: the first packet after the profile
    /// took effect.
    capacity_origin: Option<Instant>,
    line: BinaryHeap<Reverse<Queued<T>>>,
    next_seq: u64,
    queued_bytes: u64,
    stats: DirectionStats,
}

impl<T: Copy> Link<T> {
    pub fn new(profile: Profile, seed: u64) -> Self {
        Self {
            profile,
            streams: Streams::new(seed),
            burst_state: GilbertElliottState::default(),
            pacer: Pacer::default(),
            jitter: JitterProcess::default(),
            last_release: None,
            blackout: Blackout::Off,
            capacity_origin: None,
            line: BinaryHeap::new(),
            next_seq: 0,
            queued_bytes: 0,
            stats: DirectionStats::default(),
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Replaces the impairments from now on. Packets already queued keep their release
    /// times, and the random streams, the burst state and the rate limiter's backlog carry
    /// over, as they would when a real link changes its conditions.
    /// A capacity trace in the new profile starts from the next packet.
    pub fn set_profile(&mut self, profile: Profile) {
        self.profile = profile;
        self.capacity_origin = None;
    }

    /// The bottleneck at `now`: the profile's rate limit, with its rate taken from the
    /// capacity trace if the profile has one.
    pub fn rate_at(&mut self, now: Instant) -> Option<RateLimit> {
        match &self.profile.capacity {
            Some(trace) => {
                let origin = *self.capacity_origin.get_or_insert(now);
                Some(RateLimit {
                    bits_per_second: trace.rate_at(now.saturating_duration_since(origin)),
                    queue_bytes: self
                        .profile
                        .rate
                        .map_or(WALK_QUEUE_BYTES, |rate| rate.queue_bytes),
                })
            }
            None => self.profile.rate,
        }
    }

    /// Restarts every random stream from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.streams = Streams::new(seed);
    }

    pub fn blackout(&self) -> Blackout {
        self.blackout
    }

    pub fn set_blackout(&mut self, blackout: Blackout) {
        self.blackout = blackout;
    }

    /// Decides the fate of a packet that arrived at `now`, and queues the copies that will
    /// be delivered. The payload is copied once, and only if some copy is delivered.
    pub fn offer(&mut self, now: Instant, meta: T, payload: &[u8]) -> Verdict {
        let len = payload.len() as u64;
        self.stats.received_packets += 1;
        self.stats.received_bytes += len;
        if let Some(reason) = self.lose(now) {
            self.stats.dropped.count(reason);
            return Verdict {
                original: Fate::Dropped(reason),
                duplicate: None,
            };
        }
        let duplicate = self.profile.duplicate > 0.0
            && self.streams.duplicate.random::<f64>() < clamp_probability(self.profile.duplicate);
        let mut shared: Option<Bytes> = None;
        let original = self.schedule(now, meta, payload, &mut shared);
        let duplicate = duplicate.then(|| {
            self.stats.duplicated += 1;
            self.schedule(now, meta, payload, &mut shared)
        });
        Verdict {
            original,
            duplicate,
        }
    }

    /// The drops that happen before a packet reaches the queue, in profile order.
    fn lose(&mut self, now: Instant) -> Option<DropReason> {
        if self.blackout.is_active(now) {
            return Some(DropReason::Blackout);
        }
        // Streams are only drawn from when their impairment is on, so a profile without
        // loss costs nothing per packet.
        if self.profile.loss > 0.0
            && self.streams.loss.random::<f64>() < clamp_probability(self.profile.loss)
        {
            return Some(DropReason::Loss);
        }
        if let Some(model) = &self.profile.burst_loss {
            if self.burst_state.lose(model, &mut self.streams.burst) {
                return Some(DropReason::BurstLoss);
            }
        }
        None
    }

    /// Passes one copy through the rate limiter, delay, jitter and reordering, and queues it.
    fn schedule(
        &mut self,
        now: Instant,
        meta: T,
        payload: &[u8],
        shared: &mut Option<Bytes>,
    ) -> Fate {
        let fate = self.release_time(now, payload.len() as u64);
        match fate {
            Fate::Dropped(reason) => self.stats.dropped.count(reason),
            Fate::Delivered { at, held_back } => {
                if held_back {
                    self.stats.held_back += 1;
                }
                let payload = shared
                    .get_or_insert_with(|| Bytes::copy_from_slice(payload))
                    .clone();
                self.queued_bytes += payload.len() as u64;
                let seq = self.next_seq;
                self.next_seq += 1;
                self.line.push(Reverse(Queued {
                    release: at,
                    seq,
                    meta,
                    payload,
                }));
            }
        }
        fate
    }

    fn release_time(&mut self, now: Instant, len: u64) -> Fate {
        const FULL: Fate = Fate::Dropped(DropReason::QueueFull);
        if self.line.len() >= MAX_QUEUED_PACKETS || self.queued_bytes + len > MAX_QUEUED_BYTES {
            return FULL;
        }
        let wire = len + WIRE_OVERHEAD_BYTES;
        let admitted = match (&self.profile.capacity, &self.profile.rate) {
            (Some(trace), rate) => {
                let origin = *self.capacity_origin.get_or_insert(now);
                let queue = rate.map_or(WALK_QUEUE_BYTES, |rate| rate.queue_bytes);
                Some(self.pacer.admit_traced(now, wire, queue, trace, origin))
            }
            (None, Some(limit)) => Some(self.pacer.admit(now, wire, limit)),
            (None, None) => None,
        };
        let departure = match admitted {
            Some(Some(departure)) => departure,
            Some(None) => return FULL,
            None => now,
        };
        let jitter = self.jitter.offset(
            departure,
            self.profile.jitter.min(MAX_DELAY),
            &mut self.streams.jitter,
        );
        let delay = i128::try_from(self.profile.delay.min(MAX_DELAY).as_nanos()).unwrap_or(0);
        // Jitter may take a packet below the fixed delay but never below no delay at all.
        let delay = u64::try_from((delay + i128::from(jitter)).max(0)).unwrap_or(0);
        let Some(mut release) = departure.checked_add(Duration::from_nanos(delay)) else {
            return FULL;
        };
        if let Some(last) = self.last_release {
            release = release.max(last);
        }
        self.last_release = Some(release);
        if let Some(reorder) = &self.profile.reorder {
            if reorder.probability > 0.0
                && self.streams.reorder.random::<f64>() < clamp_probability(reorder.probability)
            {
                // The held packet does not move `last_release`, so the packets after it
                // keep their normal times and overtake it.
                return match release.checked_add(reorder.extra_delay.min(MAX_DELAY)) {
                    Some(at) => Fate::Delivered {
                        at,
                        held_back: true,
                    },
                    None => FULL,
                };
            }
        }
        Fate::Delivered {
            at: release,
            held_back: false,
        }
    }

    /// When the next queued packet is due, if any.
    pub fn next_release(&self) -> Option<Instant> {
        self.line.peek().map(|Reverse(q)| q.release)
    }

    /// Moves up to `max` packets due at `now` into `out`, in release order. Packets that
    /// fall due during a blackout are dropped here: a link that is down delivers nothing,
    /// including what was already on its way.
    pub fn pop_ready(&mut self, now: Instant, out: &mut Vec<(T, Bytes)>, max: usize) -> usize {
        let mut moved = 0;
        while moved < max {
            match self.line.peek() {
                Some(Reverse(q)) if q.release <= now => {}
                _ => break,
            }
            let Some(Reverse(q)) = self.line.pop() else {
                break;
            };
            self.queued_bytes -= q.payload.len() as u64;
            if self.blackout.is_active(now) {
                self.stats.dropped.blackout += 1;
                continue;
            }
            out.push((q.meta, q.payload));
            moved += 1;
        }
        moved
    }

    /// Counts packets the caller sent after popping them.
    pub fn record_forwarded(&mut self, packets: u64, bytes: u64) {
        self.stats.forwarded_packets += packets;
        self.stats.forwarded_bytes += bytes;
    }

    /// Counts popped packets the operating system refused to send.
    pub fn record_send_errors(&mut self, packets: u64) {
        self.stats.dropped.send_error += packets;
    }

    /// Counts popped packets whose flow was gone by the time they were due.
    pub fn record_no_flow(&mut self, packets: u64) {
        self.stats.dropped.no_flow += packets;
    }

    /// Counts a packet that arrived but could not be given a flow, so was never offered.
    pub fn refuse_without_flow(&mut self, len: usize) {
        self.stats.received_packets += 1;
        self.stats.received_bytes += len as u64;
        self.stats.dropped.no_flow += 1;
    }

    pub fn stats(&self) -> DirectionStats {
        DirectionStats {
            queued_packets: self.line.len() as u64,
            queued_bytes: self.queued_bytes,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impair::profile::{GilbertElliott, RateLimit};

    const MS: Duration = Duration::from_millis(1);

    /// What a run through a link produced.
    struct Run {
        /// Each offered packet's arrival time and verdict.
        verdicts: Vec<(Instant, Verdict)>,
        /// Sequence numbers of the copies that left during the run, in the order they left.
        order: Vec<u64>,
    }

    /// Offers `count` packets of `len` bytes, one every `gap`, popping whatever is due as
    /// time goes by (as the shaper's tasks do), so the queue bound only bites when a test
    /// wants it to.
    fn drive(link: &mut Link<u64>, start: Instant, count: u64, gap: Duration, len: usize) -> Run {
        let payload = vec![0u8; len];
        let (mut verdicts, mut order, mut out) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..count {
            let now = start + gap * u32::try_from(i).expect("test packet counts fit in u32");
            verdicts.push((now, link.offer(now, i, &payload)));
            link.pop_ready(now, &mut out, usize::MAX);
            order.extend(out.drain(..).map(|(seq, _)| seq));
        }
        Run { verdicts, order }
    }

    fn loss_rate(verdicts: &[(Instant, Verdict)]) -> f64 {
        let lost = verdicts
            .iter()
            .filter(|(_, v)| v.dropped().is_some())
            .count();
        lost as f64 / verdicts.len() as f64
    }

    /// Mean length of the runs of consecutive lost packets.
    fn mean_burst(verdicts: &[(Instant, Verdict)]) -> f64 {
        let (mut runs, mut lost, mut in_run) = (0u64, 0u64, false);
        for (_, v) in verdicts {
            let is_lost = v.dropped().is_some();
            if is_lost {
                lost += 1;
                if !in_run {
                    runs += 1;
                }
            }
            in_run = is_lost;
        }
        lost as f64 / runs.max(1) as f64
    }

    /// Pops everything still queued and returns the sequence numbers in the order they left.
    fn drain(link: &mut Link<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        if let Some(last) = link.line.iter().map(|Reverse(q)| q.release).max() {
            link.pop_ready(last, &mut out, usize::MAX);
        }
        assert_eq!(link.stats().queued_packets, 0);
        out.into_iter().map(|(seq, _)| seq).collect()
    }

    /// Packets that leave after some packet sent later than them.
    fn overtaken(order: &[u64]) -> usize {
        let mut latest_sent = None;
        order
            .iter()
            .filter(|&&seq| {
                let late = latest_sent.is_some_and(|latest| seq < latest);
                latest_sent = latest_sent.max(Some(seq));
                late
            })
            .count()
    }

    fn assert_balanced(stats: &DirectionStats) {
        assert_eq!(
            stats.received_packets + stats.duplicated,
            stats.forwarded_packets + stats.dropped.total() + stats.queued_packets,
            "every packet is forwarded, dropped or queued: {stats:?}"
        );
    }

    #[test]
    fn random_loss_matches_the_configured_rate() {
        let mut link = Link::new(Profile::lossy(), 1);
        let verdicts = drive(&mut link, Instant::now(), 100_000, MS, 1000).verdicts;
        let rate = loss_rate(&verdicts);
        // One standard deviation is sqrt(0.05 × 0.95 / 100 000) ≈ 0.0007; allow about 5.
        assert!((rate - 0.05).abs() < 0.0035, "measured loss {rate}");
        assert!(verdicts
            .iter()
            .all(|(_, v)| matches!(v.dropped(), None | Some(DropReason::Loss))));
        assert_eq!(link.stats().dropped.loss, (rate * 100_000.0).round() as u64);
    }

    #[test]
    fn gilbert_elliott_gives_the_average_loss_in_longer_bursts_than_bernoulli() {
        let model = GilbertElliott::with_average(0.02, 4.0);
        let mut bursty = Link::new(Profile::lan().with_burst_loss(model), 2);
        let bursty = drive(&mut bursty, Instant::now(), 400_000, MS, 100).verdicts;
        let mut even = Link::new(Profile::lan().with_loss(0.02), 2);
        let even = drive(&mut even, Instant::now(), 400_000, MS, 100).verdicts;

        let rate = loss_rate(&bursty);
        // About 2 000 bursts of about 4 losses: the relative spread is a few percent.
        assert!((rate - 0.02).abs() < 0.002, "bursty loss {rate}");
        assert!(bursty
            .iter()
            .all(|(_, v)| matches!(v.dropped(), None | Some(DropReason::BurstLoss))));
        let (bursty, even) = (mean_burst(&bursty), mean_burst(&even));
        // Expected: 4 for the Gilbert model, 1 / (1 - 0.02) ≈ 1.02 for independent loss.
        assert!(
            (3.5..4.5).contains(&bursty),
            "Gilbert–Elliott mean burst {bursty}"
        );
        assert!(even < 1.1, "Bernoulli mean burst {even}");
    }

    #[test]
    fn duplication_rate_is_within_bounds_and_both_copies_arrive() {
        let mut link = Link::new(Profile::lan().with_duplication(0.03), 3);
        let Run { verdicts, order } = drive(&mut link, Instant::now(), 100_000, MS, 500);
        let copies = verdicts
            .iter()
            .filter(|(_, v)| v.duplicate.is_some())
            .count();
        let rate = copies as f64 / 100_000.0;
        assert!((rate - 0.03).abs() < 0.003, "measured duplication {rate}");
        assert!(verdicts
            .iter()
            .all(|(_, v)| v.delivered() == 1 + usize::from(v.duplicate.is_some())));
        assert_eq!(link.stats().duplicated, copies as u64);
        assert_eq!(order.len() + drain(&mut link).len(), 100_000 + copies);
    }

    #[test]
    fn rate_limit_delivers_at_the_configured_rate_and_bounds_queueing_delay() {
        // 1 Mbit/s with a 50 ms queue, offered 2 Mbit/s of 1 200-byte (wire) packets.
        let limit = RateLimit::with_queue_time(1_000_000, 50 * MS);
        let mut link = Link::new(Profile::lan().with_rate(limit), 4);
        let start = Instant::now();
        let len = 1200 - WIRE_OVERHEAD_BYTES as usize;
        let verdicts = drive(&mut link, start, 4_000, Duration::from_micros(4_800), len).verdicts;

        let delivered: Vec<_> = verdicts
            .iter()
            .filter_map(|(t, v)| Some((*t, v.original.release()?)))
            .collect();
        let last = delivered
            .iter()
            .map(|(_, r)| *r)
            .max()
            .expect("some packets are delivered");
        let bits = (delivered.len() * 1200 * 8) as f64;
        let throughput = bits / last.duration_since(start).as_secs_f64();
        assert!(
            (throughput - 1_000_000.0).abs() < 20_000.0,
            "throughput {throughput} bit/s"
        );
        let tail_drops = verdicts
            .iter()
            .filter(|(_, v)| v.dropped() == Some(DropReason::QueueFull))
            .count();
        assert!(
            (1_900..2_100).contains(&tail_drops),
            "about half the offered load is dropped: {tail_drops}"
        );
        // Queueing delay never exceeds the queue plus the packet's own sending time.
        let worst = delivered
            .iter()
            .map(|(t, r)| r.duration_since(*t))
            .max()
            .unwrap_or_default();
        assert!(
            worst <= 50 * MS + Duration::from_micros(9_600),
            "worst delay {worst:?}"
        );
        assert!(
            worst >= 40 * MS,
            "a saturated queue shows as delay: {worst:?}"
        );
    }

    #[test]
    fn a_capacity_trace_sets_the_rate_piece_by_piece_and_restarts_with_a_new_profile() {
        use crate::impair::CapacityTrace;
        use std::sync::Arc;
        // 1 s at 2 Mbit/s, then 1 s at 0.5 Mbit/s, offered 4 Mbit/s of 1 000-byte packets.
        let trace = CapacityTrace {
            step: Duration::from_secs(1),
            rates: Arc::from([2_000_000u64, 500_000]),
        };
        let profile = Profile::lan().with_capacity(trace);
        let mut link: Link<u64> = Link::new(profile.clone(), 9);
        let start = Instant::now();
        let mut out = Vec::new();
        let mut per_second = [0u64; 2];
        for i in 0..1000u64 {
            let now = start + Duration::from_millis(2 * i);
            link.offer(now, i, &[0u8; 1000 - WIRE_OVERHEAD_BYTES as usize]);
            link.pop_ready(now, &mut out, usize::MAX);
            for _ in out.drain(..) {
                per_second[usize::from(now >= start + Duration::from_secs(1))] += 1;
            }
        }
        // 2 Mbit/s is 250 packets a second, 0.5 Mbit/s is 62.5; the queue (37.5 kB) holds
        // what the first second left over, and drains at the lower rate.
        assert!((240..=260).contains(&per_second[0]), "{per_second:?}");
        assert!((55..=75).contains(&per_second[1]), "{per_second:?}");
        let queued = link.stats().queued_bytes;
        assert!(
            queued <= WALK_QUEUE_BYTES + 1000,
            "the queue is bounded: {queued}"
        );
        assert_eq!(
            link.rate_at(start + Duration::from_millis(1500)),
            Some(RateLimit {
                bits_per_second: 500_000,
                queue_bytes: WALK_QUEUE_BYTES
            })
        );
        link.set_profile(profile);
        let later = start + Duration::from_secs(7);
        assert_eq!(
            link.rate_at(later).map(|r| r.bits_per_second),
            Some(2_000_000),
            "a new profile starts its trace"
        );
    }

    #[test]
    fn rate_limit_tail_drops_once_the_queue_is_full() {
        let limit = RateLimit {
            bits_per_second: 1_000_000,
            queue_bytes: 12_000,
        };
        let mut link = Link::new(Profile::lan().with_rate(limit), 5);
        let now = Instant::now();
        let len = 1200 - WIRE_OVERHEAD_BYTES as usize;
        let payload = vec![7u8; len];
        let verdicts: Vec<_> = (0..100).map(|i| link.offer(now, i, &payload)).collect();
        // The queue holds exactly ten 1 200-byte packets; the eleventh and later are dropped.
        assert!(verdicts[..10].iter().all(|v| v.delivered() == 1));
        assert!(verdicts[10..]
            .iter()
            .all(|v| v.dropped() == Some(DropReason::QueueFull)));
        let spacing = verdicts[1]
            .original
            .release()
            .zip(verdicts[0].original.release())
            .map(|(b, a)| b - a);
        assert_eq!(
            spacing,
            Some(Duration::from_micros(9_600)),
            "1 200 bytes at 1 Mbit/s"
        );
        assert_eq!(link.stats().dropped.queue_full, 90);
    }

    #[test]
    fn delay_and_jitter_stay_within_bounds_without_reordering() {
        let profile = Profile::lan().with_delay(40 * MS).with_jitter(20 * MS);
        // Dense and sparse traffic, each over enough jitter segments (80 ms) for a tight mean.
        for (gap, count) in [(Duration::from_micros(200), 100_000), (5 * MS, 20_000)] {
            let mut link = Link::new(profile.clone(), 6);
            let Run {
                verdicts,
                mut order,
            } = drive(&mut link, Instant::now(), count, gap, 200);
            let delays: Vec<f64> = verdicts
                .iter()
                .map(|(t, v)| {
                    v.original
                        .release()
                        .map(|r| r.duration_since(*t).as_secs_f64() * 1000.0)
                })
                .collect::<Option<_>>()
                .expect("nothing is dropped");
            assert!(
                delays.iter().all(|d| (20.0..=60.0).contains(d)),
                "delays stay in 40 ± 20 ms"
            );
            let mean = delays.iter().sum::<f64>() / delays.len() as f64;
            let spread = (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>()
                / delays.len() as f64)
                .sqrt();
            // Dense or sparse, the mean stays at the fixed delay and the jitter is real.
            assert!(
                (mean - 40.0).abs() < 3.0,
                "mean delay {mean} ms with gap {gap:?}"
            );
            assert!(spread > 5.0, "jitter spread {spread} ms with gap {gap:?}");
            order.extend(drain(&mut link));
            assert_eq!(overtaken(&order), 0, "jitter alone never reorders");
        }
    }

    #[test]
    fn fixed_delay_is_exact() {
        let mut link = Link::new(Profile::lan().with_delay(25 * MS), 7);
        let verdicts = drive(&mut link, Instant::now(), 1_000, MS, 100).verdicts;
        assert!(verdicts
            .iter()
            .all(|(t, v)| v.original.release() == Some(*t + 25 * MS)));
    }

    #[test]
    fn reordering_holds_packets_back_at_about_the_configured_rate() {
        let profile = Profile::lan()
            .with_delay(10 * MS)
            .with_reorder(0.05, 8 * MS);
        let mut link = Link::new(profile, 8);
        let Run {
            verdicts,
            mut order,
        } = drive(&mut link, Instant::now(), 100_000, MS, 100);
        let held = verdicts
            .iter()
            .filter(|(_, v)| {
                matches!(
                    v.original,
                    Fate::Delivered {
                        held_back: true,
                        ..
                    }
                )
            })
            .count();
        let rate = held as f64 / 100_000.0;
        assert!((rate - 0.05).abs() < 0.004, "held back {rate}");
        assert_eq!(link.stats().held_back, held as u64);
        // Each held packet is overtaken by the next few, except when they are all held too.
        order.extend(drain(&mut link));
        let late = overtaken(&order);
        assert!(
            late <= held && late as f64 >= held as f64 * 0.9,
            "{late} of {held} held packets overtaken"
        );
    }

    #[test]
    fn blackout_drops_everything_in_its_window_including_what_was_in_flight() {
        let mut link = Link::new(Profile::lan().with_delay(50 * MS), 9);
        let start = Instant::now();
        let (from, until) = (start + 100 * MS, start + 400 * MS);
        let payload = [1u8; 100];
        let mut delivered = Vec::new();
        let mut out = Vec::new();
        for ms in 0..600u32 {
            let now = start + MS * ms;
            if now == from {
                link.set_blackout(Blackout::Until(until));
            }
            let verdict = link.offer(now, u64::from(ms), &payload);
            let inside = (from..until).contains(&now);
            assert_eq!(
                verdict.dropped() == Some(DropReason::Blackout),
                inside,
                "packet {ms}"
            );
            link.pop_ready(now, &mut out, usize::MAX);
            delivered.extend(out.drain(..).map(|(seq, _)| seq));
        }
        // Sent before 50 ms: delivered before the window. Sent 50..100 ms: due inside the
        // window, so lost. Sent from 400 ms on: delivered (up to the end of the run).
        let expected: Vec<u64> = (0..50).chain(400..550).collect();
        assert_eq!(delivered, expected);
        let mut stats = link.stats();
        stats.forwarded_packets = delivered.len() as u64;
        assert_eq!(stats.dropped.blackout, 350);
        assert_balanced(&stats);
    }

    #[test]
    fn same_seed_gives_the_same_decisions_and_another_seed_does_not() {
        let profile = Profile::lan()
            .with_delay(30 * MS)
            .with_jitter(10 * MS)
            .with_loss(0.05)
            .with_burst_loss(GilbertElliott::with_average(0.02, 3.0))
            .with_duplication(0.02)
            .with_reorder(0.02, 5 * MS)
            .with_rate(RateLimit::with_queue_time(2_000_000, 100 * MS));
        let start = Instant::now();
        let run = |seed| {
            drive(
                &mut Link::new(profile.clone(), seed),
                start,
                20_000,
                MS,
                200,
            )
            .verdicts
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn random_drops_do_not_depend_on_timing_or_other_impairments() {
        let plain = Profile::lossy();
        let busy = Profile::lossy()
            .with_jitter(5 * MS)
            .with_duplication(0.1)
            .with_reorder(0.1, MS);
        let drops = |profile: &Profile, gap| -> Vec<bool> {
            let mut link = Link::new(profile.clone(), 10);
            drive(&mut link, Instant::now(), 10_000, gap, 100)
                .verdicts
                .iter()
                .map(|(_, v)| v.dropped().is_some())
                .collect()
        };
        assert_eq!(drops(&plain, MS), drops(&busy, Duration::from_micros(300)));
    }

    #[test]
    fn queued_packets_are_bounded() {
        let mut link = Link::new(Profile::lan().with_delay(Duration::from_secs(10)), 11);
        let count = MAX_QUEUED_PACKETS as u64 + 10;
        let verdicts = drive(&mut link, Instant::now(), count, Duration::ZERO, 1).verdicts;
        assert!(verdicts[MAX_QUEUED_PACKETS..]
            .iter()
            .all(|(_, v)| v.dropped() == Some(DropReason::QueueFull)));
        assert_eq!(link.stats().queued_packets, MAX_QUEUED_PACKETS as u64);
    }

    #[test]
    fn hostile_profile_values_never_panic() {
        let profile = Profile {
            delay: Duration::MAX,
            jitter: Duration::MAX,
            loss: f64::NAN,
            burst_loss: Some(GilbertElliott {
                good_to_bad: f64::INFINITY,
                bad_to_good: f64::NAN,
                loss_in_good: -3.0,
                loss_in_bad: 0.5,
            }),
            duplicate: 7.0,
            rate: Some(RateLimit {
                bits_per_second: 0,
                queue_bytes: u64::MAX,
            }),
            reorder: Some(crate::impair::Reorder {
                probability: 2.0,
                extra_delay: Duration::MAX,
            }),
            ..Profile::lan()
        };
        let mut link = Link::new(profile, 12);
        let start = Instant::now();
        for len in [0, 1, 1200, 65_535] {
            drive(&mut link, start, 200, Duration::ZERO, len);
        }
        let mut out = Vec::new();
        link.pop_ready(
            start + Duration::from_secs(3_600 * 24 * 365),
            &mut out,
            usize::MAX,
        );
        link.record_forwarded(out.len() as u64, 0);
        link.set_profile(Profile::lan());
        drive(&mut link, start, 10, MS, 10);
        assert_balanced(&link.stats());
    }
}
