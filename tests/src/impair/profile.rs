//! What a network does to the packets of one direction: the [`Profile`], its parts, the
//! named profiles the benchmark and the tests share, and the [`Timeline`] of scripted link
//! events (blackouts, rebinding, handover) a profile may carry.
//!
//! A profile is plain data: nothing here draws a random number or reads a clock. The
//! [`Link`](super::Link) turns a profile into decisions, and the [`Shaper`](super::Shaper)
//! runs timelines. All delays are **one way**: a symmetric link with `delay = 40 ms` on both
//! directions has a round-trip time of about 80 ms.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::capacity::{CapacityTrace, Walk};

/// Longest one-way delay, jitter or reordering hold-back a profile may ask for; longer
/// values are cut to this. A minute of one-way delay is an outage, not a network, and the
/// cap keeps every `Instant + Duration` the shaper computes far from overflowing.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Most visits an [`alternating_handover`](Timeline::alternating_handover) timeline makes:
/// each holds a profile (and its trace), and an hour of handovers every second is plenty.
pub const MAX_VISITS: u64 = 1800;

/// How long the radio is gone during a handover. 300 ms is a typical Wi-Fi to cellular
/// switch on a phone: long enough that a QUIC path sees loss, short enough not to time out.
pub const HANDOVER_BLACKOUT: Duration = Duration::from_millis(300);

/// When the `handover` profile switches networks, counted from the shaper's start: late
/// enough that a session is set up and media is flowing on Wi-Fi first.
pub const HANDOVER_AT: Duration = Duration::from_secs(10);

/// The names [`Profile::named`] knows, in the order a help text lists them.
pub const PROFILE_NAMES: [&str; 10] = [
    "lan",
    "wifi",
    "cellular",
    "lossy",
    "congested",
    "handover",
    "loss1-rtt80",
    "cellular-walk",
    "train",
    "fade",
];

/// The `fade` profile's cycle: this long at [`FADE_GOOD_BPS`], then [`FADE_LOW`] at
/// [`FADE_LOW_BPS`], over and over from the shaper's start.
pub const FADE_GOOD: Duration = Duration::from_secs(10);
pub const FADE_LOW: Duration = Duration::from_secs(5);
pub const FADE_GOOD_BPS: u64 = 4_000_000;
/// Below the least video any sender sends (150 kbit/s) with its audio: video cannot fit.
pub const FADE_LOW_BPS: u64 = 80_000;

/// Queue of the time-varying profiles' bottleneck: 100 ms at 3 Mbit/s, as `cellular`'s.
/// Real radio buffers are sized in bytes, so at a fade's low rate the same queue holds
/// seconds: that is the bufferbloat a sender must back off from.
pub const WALK_QUEUE_BYTES: u64 = 37_500;

/// What a handover does to the address the relay sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressChange {
    /// A new source port on the same address: what a NAT rebinding looks like, and what
    /// quinn treats as the same path (it keeps its RTT and congestion state).
    #[default]
    Port,
    /// A new source address (and port): a phone moving to another network. quinn
    /// validates the new path and starts its RTT estimate and congestion control afresh.
    Ip,
}

impl FromStr for AddressChange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "port" => Ok(Self::Port),
            "ip" => Ok(Self::Ip),
            other => Err(format!("{other:?} is neither `ip` nor `port`")),
        }
    }
}

impl fmt::Display for AddressChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Port => "port",
            Self::Ip => "ip",
        })
    }
}

/// Bursty loss after Gilbert and Elliott: the link is either *good* or *bad*, moves between
/// the two with the given per-packet probabilities, and loses packets at a different rate in
/// each state. Real radio links lose packets in runs, which hurts a codec or a congestion
/// controller more than the same average loss spread evenly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GilbertElliott {
    /// Probability, per packet, of moving from the good state to the bad one.
    pub good_to_bad: f64,
    /// Probability, per packet, of moving from the bad state back to the good one.
    pub bad_to_good: f64,
    /// Loss probability while good.
    pub loss_in_good: f64,
    /// Loss probability while bad.
    pub loss_in_bad: f64,
}

impl GilbertElliott {
    /// The simple Gilbert model with a given long-run `loss` and mean run of lost packets
    /// `mean_burst` (in packets, at least 1): nothing is lost while good, everything while
    /// bad, so a bad spell is a burst and its mean length is `1 / bad_to_good`.
    pub fn with_average(loss: f64, mean_burst: f64) -> Self {
        let loss = clamp_probability(loss).min(0.99);
        let mean_burst = if mean_burst.is_finite() {
            mean_burst.max(1.0)
        } else {
            1.0
        };
        let bad_to_good = 1.0 / mean_burst;
        // Stationary share of the bad state is p / (p + r); solve it for p.
        let good_to_bad = bad_to_good * loss / (1.0 - loss);
        Self {
            good_to_bad: good_to_bad.min(1.0),
            bad_to_good,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        }
    }

    /// Long-run loss rate: the time spent in each state weighted by its loss probability.
    pub fn average_loss(&self) -> f64 {
        let p = clamp_probability(self.good_to_bad);
        let r = clamp_probability(self.bad_to_good);
        if p + r == 0.0 {
            // The chain never moves: it stays good forever.
            return clamp_probability(self.loss_in_good);
        }
        (r * clamp_probability(self.loss_in_good) + p * clamp_probability(self.loss_in_bad))
            / (p + r)
    }
}

/// A bottleneck: packets leave at `bits_per_second` in arrival order, and wait in a queue of
/// at most `queue_bytes` before that. A packet that does not fit is dropped (tail drop), so
/// an overfull link shows as growing delay first and loss after, as a real buffer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Link rate, counting each datagram plus [`WIRE_OVERHEAD_BYTES`](super::WIRE_OVERHEAD_BYTES)
    /// of IP and UDP header.
    pub bits_per_second: u64,
    /// Most bytes waiting to be sent. A queue worth one second at the link rate is a badly
    /// bloated buffer; 50 to 100 ms is a well-managed one.
    pub queue_bytes: u64,
}

impl RateLimit {
    /// A limit whose queue holds `queue` worth of traffic at the link rate.
    pub fn with_queue_time(bits_per_second: u64, queue: Duration) -> Self {
        let bytes = (u128::from(bits_per_second) * queue.as_nanos()) / 8_000_000_000;
        Self {
            bits_per_second,
            queue_bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
        }
    }
}

/// Reordering: each packet is, with `probability`, held back by `extra_delay` on top of its
/// normal delay, so packets sent shortly after it overtake it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reorder {
    pub probability: f64,
    pub extra_delay: Duration,
}

/// One scripted event on a link. Every step acts on the whole link (both directions and
/// every flow), because the events it models (losing the radio, changing networks) do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Drop everything in both directions for this long.
    Blackout(Duration),
    /// Give every flow a new source port toward the upstream, as a NAT rebinding does.
    Rebind,
    /// Replace the profile of both directions.
    Switch(Box<Profile>),
    /// Change networks: a blackout of the given length, then a new source port (or
    /// address, with [`AddressChange::Ip`]), then the new profile on both directions, as a
    /// phone moving from Wi-Fi to cellular sees it.
    Handover {
        blackout: Duration,
        to: Box<Profile>,
        change: AddressChange,
    },
}

/// A [`Step`] and when it happens, counted from the start of the timeline (or of the
/// current repetition).
#[derive(Debug, Clone, PartialEq)]
pub struct TimedStep {
    pub at: Duration,
    pub step: Step,
}

/// Scripted link events. A timeline runs from the moment the shaper starts; with
/// `repeat_every` it starts over at each multiple of that period.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Timeline {
    pub steps: Vec<TimedStep>,
    pub repeat_every: Option<Duration>,
}

impl Timeline {
    /// A timeline with no events.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Adds `step` at `at`.
    pub fn at(mut self, at: Duration, step: Step) -> Self {
        self.steps.push(TimedStep { at, step });
        self
    }

    /// Starts the whole timeline over every `period`.
    pub fn repeating(mut self, period: Duration) -> Self {
        self.repeat_every = Some(period);
        self
    }

    /// One handover to `to` at `at`, with the usual [`HANDOVER_BLACKOUT`].
    pub fn handover_at(at: Duration, to: Profile) -> Self {
        Self::none().at(
            at,
            Step::Handover {
                blackout: HANDOVER_BLACKOUT,
                to: Box::new(to),
                change: AddressChange::Port,
            },
        )
    }

    /// A handover every `every`, alternating between `other` and `home`: at `every` the link
    /// moves to `other`, at `2 × every` back to `home`, and so on. A benchmark that needs
    /// many handovers uses this; alternating keeps each network's share of time equal.
    pub fn periodic_handover(every: Duration, home: Profile, other: Profile) -> Self {
        let home = home.with_timeline(Self::none());
        let other = other.with_timeline(Self::none());
        Self::none()
            .at(
                every,
                Step::Handover {
                    blackout: HANDOVER_BLACKOUT,
                    to: Box::new(other),
                    change: AddressChange::Port,
                },
            )
            .at(
                every.saturating_mul(2),
                Step::Handover {
                    blackout: HANDOVER_BLACKOUT,
                    to: Box::new(home),
                    change: AddressChange::Port,
                },
            )
            .repeating(every.saturating_mul(2))
    }

    /// Like [`periodic_handover`](Self::periodic_handover), but each visit to the other
    /// network is a new one: the `k`-th (from 0) goes to `other(k)`, so a network whose rate
    /// walks is met at another moment of another walk each time, not at the start of the
    /// same one. Handovers run until `until` (at most [`MAX_VISITS`] visits) and do not repeat.
    pub fn alternating_handover(
        every: Duration,
        home: Profile,
        mut other: impl FnMut(u64) -> Profile,
        until: Duration,
    ) -> Self {
        let home = home.with_timeline(Self::none());
        let mut timeline = Self::none();
        for k in 0..MAX_VISITS {
            let at = every.saturating_mul(2 * k as u32 + 1);
            if at >= until || every.is_zero() {
                break;
            }
            timeline = timeline
                .at(
                    at,
                    Step::Handover {
                        blackout: HANDOVER_BLACKOUT,
                        to: Box::new(other(k).with_timeline(Self::none())),
                        change: AddressChange::Port,
                    },
                )
                .at(
                    at + every,
                    Step::Handover {
                        blackout: HANDOVER_BLACKOUT,
                        to: Box::new(home.clone()),
                        change: AddressChange::Port,
                    },
                );
        }
        timeline
    }

    /// The same timeline with every handover changing the address this way.
    pub fn with_change(mut self, change: AddressChange) -> Self {
        for TimedStep { step, .. } in &mut self.steps {
            if let Step::Handover { change: c, .. } = step {
                *c = change;
            }
        }
        self
    }

    /// When the handovers happen, counted from the start, up to `until` (repetitions
    /// included), in order.
    pub fn handover_times(&self, until: Duration) -> Vec<Duration> {
        let mut at: Vec<Duration> = self
            .steps
            .iter()
            .filter(|s| matches!(s.step, Step::Handover { .. }))
            .map(|s| s.at)
            .collect();
        at.sort();
        let mut times = Vec::new();
        let period = self.repeat_every.filter(|p| !p.is_zero() && !at.is_empty());
        let mut cycle = Duration::ZERO;
        loop {
            for &t in &at {
                match cycle.checked_add(t) {
                    Some(t) if t <= until => times.push(t),
                    _ => return times,
                }
            }
            match period.and_then(|p| cycle.checked_add(p)) {
                Some(next) if next <= until => cycle = next,
                _ => return times,
            }
        }
    }
}

/// What the network does to one direction of traffic. The impairments apply in this order:
/// blackout, random loss, bursty loss, duplication, rate limit (with its queue), delay plus
/// jitter, reordering.
///
/// Build one from [`Profile::lan`] (nothing) or a named profile and the `with_*` methods:
///
/// ```
/// # use std::time::Duration;
/// # use duet_tests::impair::Profile;
/// let p = Profile::lan().with_delay(Duration::from_millis(25)).with_loss(0.02).with_seed(7);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Largest deviation from `delay`, either way. Jitter never reorders packets: the
    /// extra delay drifts slowly from packet to packet (see [`Link`](super::Link)).
    pub jitter: Duration,
    /// Independent (Bernoulli) loss probability per packet.
    pub loss: f64,
    /// Bursty loss, applied after `loss`.
    pub burst_loss: Option<GilbertElliott>,
    /// Probability that a packet is delivered twice. The copy goes through the rate limit
    /// and the delay on its own, as a duplicate on a real path does.
    pub duplicate: f64,
    pub rate: Option<RateLimit>,
    /// A rate that changes over time, from the moment the profile takes effect. It
    /// replaces `rate`'s bits per second; `rate`'s queue (or [`WALK_QUEUE_BYTES`]
    /// without one) still bounds what waits.
    pub capacity: Option<CapacityTrace>,
    pub reorder: Option<Reorder>,
    /// Seed for this direction's random draws, overriding the shaper's seed.
    pub seed: Option<u64>,
    /// Scripted events; see [`Shaper`](super::Shaper) for which profile's timeline runs.
    pub timeline: Timeline,
}

impl Profile {
    /// No impairment at all: a loopback cable.
    pub fn lan() -> Self {
        Self::default()
    }

    /// A symmetric path with this round-trip time: half of it each way.
    pub fn rtt(rtt: Duration) -> Self {
        Self::lan().with_delay(rtt / 2)
    }

    /// Home Wi-Fi: about 20 ms round trip, a little jitter, rare independent loss.
    pub fn wifi() -> Self {
        Self::lan()
            .with_delay(Duration::from_millis(10))
            .with_jitter(Duration::from_millis(2))
            .with_loss(0.005)
    }

    /// A phone on LTE: about 80 ms round trip with plenty of jitter, 1% loss in short bursts,
    /// and a 3 Mbit/s bottleneck with a 100 ms queue (a moderately sized buffer).
    pub fn cellular() -> Self {
        Self::lan()
            .with_delay(Duration::from_millis(40))
            .with_jitter(Duration::from_millis(20))
            .with_burst_loss(GilbertElliott::with_average(0.01, 3.0))
            .with_rate(RateLimit::with_queue_time(
                3_000_000,
                Duration::from_millis(100),
            ))
    }

    /// 5% independent loss and nothing else, to see loss recovery on its own.
    pub fn lossy() -> Self {
        Self::lan().with_loss(0.05)
    }

    /// 1% independent loss and 40 ms each way, nothing else: the impaired run of the
    /// browser comparison with WebRTC (issue 8), where a rate limit or jitter would measure
    /// the two congestion controllers rather than loss recovery.
    pub fn loss1_rtt80() -> Self {
        Self::lan()
            .with_delay(Duration::from_millis(40))
            .with_loss(0.01)
    }

    /// A saturated 1 Mbit/s uplink with a bloated buffer (one second of queue), where
    /// congestion shows as delay long before it shows as loss.
    pub fn congested() -> Self {
        Self::lan().with_rate(RateLimit::with_queue_time(
            1_000_000,
            Duration::from_secs(1),
        ))
    }

    /// Starts as [`wifi`](Self::wifi) and at [`HANDOVER_AT`] moves to
    /// [`cellular`](Self::cellular): a [`HANDOVER_BLACKOUT`], a rebinding, then the new link.
    pub fn handover() -> Self {
        Self::wifi().with_timeline(Timeline::handover_at(HANDOVER_AT, Self::cellular()))
    }

    /// [`cellular`](Self::cellular)'s delay, jitter and bursty loss on a link whose rate
    /// follows a seeded random walk between 0.3 and 10 Mbit/s with about two deep fades
    /// a minute ([`Walk::cellular`]), and a byte-sized queue ([`WALK_QUEUE_BYTES`]).
    pub fn cellular_walk() -> Self {
        Self::cellular_walk_seeded(1)
    }

    /// [`cellular_walk`](Self::cellular_walk) with its trace drawn from `seed`.
    pub fn cellular_walk_seeded(seed: u64) -> Self {
        Self::cellular()
            .with_rate(RateLimit {
                bits_per_second: Walk::cellular().start_bps,
                queue_bytes: WALK_QUEUE_BYTES,
            })
            .with_capacity(CapacityTrace::random_walk(&Walk::cellular(), seed))
    }

    /// A phone on a train: the cellular link's delay and loss, a rate that swings harder
    /// with long deep fades ([`Walk::train`]), and a handover to the next cell every 20 to
    /// 60 s (seeded), each a blackout and a new address with a fresh trace.
    pub fn train() -> Self {
        let link = |seed: u64| {
            Self::cellular()
                .with_rate(RateLimit {
                    bits_per_second: Walk::train().start_bps,
                    queue_bytes: WALK_QUEUE_BYTES,
                })
                .with_capacity(CapacityTrace::random_walk(&Walk::train(), seed))
        };
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x7261_696e);
        let period = Duration::from_secs(600);
        let mut timeline = Timeline::none();
        let mut at = Duration::ZERO;
        for cell in 1u64.. {
            at += Duration::from_secs(rand::Rng::random_range(&mut rng, 20..=60));
            if at >= period {
                break;
            }
            timeline = timeline.at(
                at,
                Step::Handover {
                    blackout: HANDOVER_BLACKOUT,
                    to: Box::new(link(100 + cell)),
                    change: AddressChange::Ip,
                },
            );
        }
        link(100).with_timeline(timeline.repeating(period))
    }

    /// [`wifi`](Self::wifi)'s delay and jitter (no random loss: what is lost is the fade's)
    /// on a 4 Mbit/s link that falls to 80 kbit/s for 5 s in every 15 (a lift, a tunnel),
    /// with a byte-sized queue ([`WALK_QUEUE_BYTES`]): the same fade every cycle, so a test
    /// knows one is coming.
    pub fn fade() -> Self {
        let step = Duration::from_secs(1);
        let pieces = |d: Duration| (d.as_secs() / step.as_secs()) as usize;
        let rates: Vec<u64> = std::iter::repeat_n(FADE_GOOD_BPS, pieces(FADE_GOOD))
            .chain(std::iter::repeat_n(FADE_LOW_BPS, pieces(FADE_LOW)))
            .collect();
        Self::wifi()
            .with_loss(0.0)
            .with_rate(RateLimit {
                bits_per_second: FADE_GOOD_BPS,
                queue_bytes: WALK_QUEUE_BYTES,
            })
            .with_capacity(CapacityTrace {
                step,
                rates: rates.into(),
            })
    }

    /// The profile called `name`, one of [`PROFILE_NAMES`].
    pub fn named(name: &str) -> Result<Self, UnknownProfile> {
        match name {
            "lan" => Ok(Self::lan()),
            "wifi" => Ok(Self::wifi()),
            "cellular" => Ok(Self::cellular()),
            "lossy" => Ok(Self::lossy()),
            "congested" => Ok(Self::congested()),
            "handover" => Ok(Self::handover()),
            "loss1-rtt80" => Ok(Self::loss1_rtt80()),
            "cellular-walk" => Ok(Self::cellular_walk()),
            "train" => Ok(Self::train()),
            "fade" => Ok(Self::fade()),
            other => Err(UnknownProfile(other.to_owned())),
        }
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay.min(MAX_DELAY);
        self
    }

    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter.min(MAX_DELAY);
        self
    }

    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = clamp_probability(loss);
        self
    }

    pub fn with_burst_loss(mut self, model: GilbertElliott) -> Self {
        self.burst_loss = Some(model);
        self
    }

    pub fn with_duplication(mut self, probability: f64) -> Self {
        self.duplicate = clamp_probability(probability);
        self
    }

    pub fn with_rate(mut self, rate: RateLimit) -> Self {
        self.rate = Some(rate);
        self
    }

    pub fn with_capacity(mut self, trace: CapacityTrace) -> Self {
        self.capacity = Some(trace);
        self
    }

    pub fn with_reorder(mut self, probability: f64, extra_delay: Duration) -> Self {
        self.reorder = Some(Reorder {
            probability: clamp_probability(probability),
            extra_delay: extra_delay.min(MAX_DELAY),
        });
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn with_timeline(mut self, timeline: Timeline) -> Self {
        self.timeline = timeline;
        self
    }

    /// This profile, then a handover every `every`, alternating with the other common
    /// radio: cellular for a Wi-Fi (or any other) profile, Wi-Fi for a cellular one. The
    /// profile's own timeline is replaced.
    pub fn with_periodic_handover(self, every: Duration) -> Self {
        let home = self.with_timeline(Timeline::none());
        let other = if home == Self::cellular() {
            Self::wifi()
        } else {
            Self::cellular()
        };
        home.clone()
            .with_timeline(Timeline::periodic_handover(every, home, other))
    }
}

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::named(name)
    }
}

/// A profile name that [`Profile::named`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network profile {0:?}; known profiles: {names}", names = KnownNames)]
pub struct UnknownProfile(pub String);

/// Formats [`PROFILE_NAMES`] for error messages without allocating a joined string.
struct KnownNames;

impl fmt::Display for KnownNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in PROFILE_NAMES.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// Reads a probability the way the decision code treats it: NaN is 0, and anything outside
/// [0, 1] is cut to the nearest end, so a typo never panics a random-number call.
pub(crate) fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn named_profiles_match_what_they_claim() -> Result<(), UnknownProfile> {
        assert_eq!(Profile::named("lan")?, Profile::default());
        let wifi = Profile::named("wifi")?;
        assert_eq!(
            (wifi.delay * 2, wifi.jitter, wifi.loss),
            (20 * MS, 2 * MS, 0.005)
        );
        let plain = Profile::named("loss1-rtt80")?;
        assert_eq!(
            (plain.delay * 2, plain.jitter, plain.loss, plain.rate),
            (80 * MS, Duration::ZERO, 0.01, None)
        );
        let cellular = Profile::named("cellular")?;
        assert_eq!((cellular.delay * 2, cellular.jitter), (80 * MS, 20 * MS));
        let burst = cellular
            .burst_loss
            .map(|model| model.average_loss())
            .unwrap_or_default();
        assert!((burst - 0.01).abs() < 1e-9, "1% bursty loss, got {burst}");
        assert_eq!(
            cellular.rate,
            Some(RateLimit {
                bits_per_second: 3_000_000,
                queue_bytes: 37_500
            })
        );
        assert_eq!(Profile::named("lossy")?.loss, 0.05);
        let congested = Profile::named("congested")?.rate;
        assert_eq!(
            congested,
            Some(RateLimit {
                bits_per_second: 1_000_000,
                queue_bytes: 125_000
            })
        );
        let handover = Profile::named("handover")?;
        assert_eq!(handover.clone().with_timeline(Timeline::none()), wifi);
        assert_eq!(
            handover.timeline.steps,
            vec![TimedStep {
                at: HANDOVER_AT,
                step: Step::Handover {
                    blackout: HANDOVER_BLACKOUT,
                    to: Box::new(cellular),
                    change: AddressChange::Port,
                }
            }]
        );
        assert_eq!(handover.timeline.repeat_every, None);
        for name in PROFILE_NAMES {
            assert_eq!(name.parse::<Profile>()?, Profile::named(name)?);
        }
        Ok(())
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let error = Profile::named("dialup")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("\"dialup\""), "{error}");
        assert!(
            PROFILE_NAMES.iter().all(|name| error.contains(name)),
            "{error}"
        );
    }

    #[test]
    fn alternating_handover_visits_a_new_network_each_time_and_ends() {
        let every = Duration::from_secs(5);
        let timeline = Timeline::alternating_handover(
            every,
            Profile::wifi(),
            |k| Profile::cellular_walk_seeded(1 + k),
            Duration::from_secs(22),
        );
        let steps: Vec<_> = timeline
            .steps
            .iter()
            .map(|TimedStep { at, step }| match step {
                Step::Handover { to, .. } => (at.as_secs(), to.capacity.clone()),
                other => panic!("unexpected step {other:?}"),
            })
            .collect();
        let walk = |seed| Profile::cellular_walk_seeded(seed).capacity;
        assert_eq!(
            steps,
            vec![(5, walk(1)), (10, None), (15, walk(2)), (20, None),],
            "visits at 5 and 15 s, each to its own walk; none starts at or after 22 s"
        );
        assert_ne!(walk(1), walk(2));
        assert_eq!(timeline.repeat_every, None);
    }

    #[test]
    fn periodic_handover_alternates_between_the_two_networks() {
        let every = Duration::from_secs(30);
        let timeline = Profile::handover().with_periodic_handover(every).timeline;
        let targets: Vec<_> = timeline
            .steps
            .iter()
            .map(|TimedStep { at, step }| match step {
                Step::Handover { to, .. } => (*at, Profile::clone(to)),
                other => panic!("unexpected step {other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            vec![(every, Profile::cellular()), (every * 2, Profile::wifi())]
        );
        assert_eq!(timeline.repeat_every, Some(every * 2));
        let from_cellular = Profile::cellular().with_periodic_handover(every).timeline;
        assert!(
            matches!(&from_cellular.steps[0].step, Step::Handover { to, .. } if **to == Profile::wifi())
        );
    }

    #[test]
    fn the_fade_profile_falls_below_the_floor_for_five_seconds_in_every_fifteen(
    ) -> Result<(), UnknownProfile> {
        let fade = Profile::named("fade")?;
        let trace = fade.capacity.clone().expect("a capacity trace");
        assert_eq!(trace.period(), FADE_GOOD + FADE_LOW);
        assert_eq!(trace.rate_at(Duration::from_millis(9_999)), FADE_GOOD_BPS);
        assert_eq!(trace.rate_at(Duration::from_millis(10_000)), FADE_LOW_BPS);
        assert_eq!(trace.rate_at(Duration::from_millis(25_000)), FADE_LOW_BPS);
        let below = trace.spans_below(150_000, Duration::from_secs(30));
        assert_eq!(
            below.iter().map(|b| (b.start, b.end)).collect::<Vec<_>>(),
            vec![
                (Duration::from_secs(10), Duration::from_secs(15)),
                (Duration::from_secs(25), Duration::from_secs(30))
            ]
        );
        assert_eq!((fade.loss, fade.delay), (0.0, Profile::wifi().delay));
        Ok(())
    }

    #[test]
    fn time_varying_profiles_walk_the_rate_and_a_train_changes_address(
    ) -> Result<(), UnknownProfile> {
        let walk = Profile::named("cellular-walk")?;
        let cellular = Profile::cellular();
        assert_eq!(
            (walk.delay, walk.jitter, walk.burst_loss),
            (cellular.delay, cellular.jitter, cellular.burst_loss)
        );
        let trace = walk.capacity.clone().expect("a capacity trace");
        let (lo, hi, _) = trace.range();
        assert!(
            lo < 300_000 && hi <= 10_000_000,
            "fades below the walk's floor: {lo}–{hi}"
        );
        assert_eq!(walk.rate.map(|r| r.queue_bytes), Some(WALK_QUEUE_BYTES));
        assert!(walk.timeline.is_empty());

        let train = Profile::named("train")?;
        let times = train.timeline.handover_times(Duration::from_secs(600));
        assert!(
            times.len() >= 600 / 60 - 1 && times.len() <= 600 / 20,
            "{times:?}"
        );
        let mut last = Duration::ZERO;
        for t in &times {
            let gap = *t - last;
            assert!(
                gap >= Duration::from_secs(20) && gap <= Duration::from_secs(60),
                "{times:?}"
            );
            last = *t;
        }
        let mut traces = vec![train.capacity.clone()];
        for step in &train.timeline.steps {
            match &step.step {
                Step::Handover { change, to, .. } => {
                    assert_eq!(*change, AddressChange::Ip);
                    assert!(
                        to.timeline.is_empty(),
                        "the next cell does not start a timeline"
                    );
                    traces.push(to.capacity.clone());
                }
                other => panic!("unexpected step {other:?}"),
            }
        }
        let distinct = traces
            .iter()
            .enumerate()
            .all(|(i, a)| traces[..i].iter().all(|b| a != b));
        assert!(distinct, "each cell has its own trace");
        Ok(())
    }

    #[test]
    fn handover_times_follow_repetitions_and_with_change_sets_every_handover() {
        let every = Duration::from_secs(5);
        let timeline = Timeline::periodic_handover(every, Profile::wifi(), Profile::cellular())
            .with_change(AddressChange::Ip);
        let secs: Vec<u64> = timeline
            .handover_times(Duration::from_secs(21))
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(secs, vec![5, 10, 15, 20]);
        assert!(timeline.steps.iter().all(|s| matches!(
            s.step,
            Step::Handover {
                change: AddressChange::Ip,
                ..
            }
        )));
        assert!(Timeline::none()
            .handover_times(Duration::from_secs(60))
            .is_empty());
        assert_eq!("ip".parse(), Ok(AddressChange::Ip));
        assert_eq!("port".parse(), Ok(AddressChange::Port));
        assert!("wifi".parse::<AddressChange>().is_err());
    }

    #[test]
    fn the_builder_clamps_what_it_cannot_mean() {
        let p = Profile::rtt(Duration::from_secs(3600))
            .with_loss(f64::NAN)
            .with_duplication(4.0)
            .with_reorder(-1.0, Duration::MAX);
        assert_eq!((p.delay, p.loss, p.duplicate), (MAX_DELAY, 0.0, 1.0));
        assert_eq!(
            p.reorder,
            Some(Reorder {
                probability: 0.0,
                extra_delay: MAX_DELAY
            })
        );
        let model = GilbertElliott::with_average(f64::INFINITY, f64::NAN);
        assert!(model.average_loss() <= 1.0 && model.bad_to_good == 1.0);
    }
}
