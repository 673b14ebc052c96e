//! Limits before and at admission: what a connection may cost the relay before it has
//! said who it is, and how many sessions one address prefix may hold.
//!
//! * **Before the QUIC handshake** ([`Admissions::on_incoming`]): a cap on handshakes in
//!   flight (a connection holds its slot until `Hello`, so 500 connections that finish the
//!   TLS handshake and never send the WebTransport request cost at most the cap); above a
//!   lower mark, QUIC address validation (a Retry) so a spoofed source gets nothing; a
//!   handshake rate per address prefix; and, under load, the operator's block list (not
//!   under load a blocked address gets its handshake and is told `blocked` at admission).
//! * **At `Hello`** ([`Admissions::admit`]): sessions in total and per address prefix. A
//!   session keeps its [`Admission`] for its whole life, parked or not, so a client that
//!   drops connections (or ends them with a stateless reset) cannot pile up parked
//!   sessions past the limits.
//!
//! An address prefix is the IPv4 address, or the IPv6 /64: one household or phone gets a
//! whole /64, so counting per /128 would let one client take every slot.
//!
//! The decisions are pure functions of counts and time ([`incoming_decision`],
//! [`TokenBucket`]), unit-tested below; the struct only holds the counts.

use crate::blocklist::BlockList;
use crate::limits::{TokenBucket, MAX_RATE_ENTRIES};
use crate::metrics::Metrics;
use crate::session::state::Fatal;
use duet_proto::ErrorCode;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An address prefix: the unit per-address limits count in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl Prefix {
    pub fn of(ip: IpAddr) -> Prefix {
        match ip {
            IpAddr::V4(v4) => Prefix::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Prefix::V4(u32::from(v4)),
                None => Prefix::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefix::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(*a)),
            Prefix::V6(p) => write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(*p) << 64)),
        }
    }
}

/// What to do with a connection attempt before any handshake work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncomingDecision {
    Accept,
    /// Ask the client to prove its address first (QUIC Retry).
    Retry,
    /// Refuse without a handshake.
    Refuse(RefuseWhy),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseWhy {
    Blocked,
    TooManyHandshakes,
    HandshakeRate,
}

/// The pure rule for a connection attempt. `validated`: the client has already answered a
/// Retry (its source address is real).
pub fn incoming_decision(
    in_flight: usize,
    max_in_flight: usize,
    retry_above: usize,
    validated: bool,
    blocked: bool,
    rate_ok: bool,
) -> IncomingDecision {
    if blocked && in_flight >= retry_above {
        // Under load a blocked address gets nothing at all. Otherwise it gets its
        // handshake, so that the app can be told `blocked` (at admission) rather than see a
        // network error it would retry forever.
        return IncomingDecision::Refuse(RefuseWhy::Blocked);
    }
    if in_flight >= max_in_flight {
        return IncomingDecision::Refuse(RefuseWhy::TooManyHandshakes);
    }
    if !validated && in_flight >= retry_above {
        // Under load: a Retry costs one packet and no state, and filters spoofed sources
        // before they can take a handshake slot or count against someone else's rate.
        return IncomingDecision::Retry;
    }
    if !rate_ok {
        return IncomingDecision::Refuse(RefuseWhy::HandshakeRate);
    }
    IncomingDecision::Accept
}

/// Limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    pub max_sessions: usize,
    pub max_sessions_per_prefix: usize,
    pub max_handshakes: usize,
    pub retry_above: usize,
    pub handshake_burst: u32,
    pub handshakes_per_minute: u32,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_prefix: HashMap<Prefix, usize>,
}

pub struct Admissions {
    limits: AdmissionLimits,
    sessions: Mutex<Counts>,
    handshakes: AtomicUsize,
    /// Handshake rate per prefix. Bounded by [`MAX_RATE_ENTRIES`]: past it, buckets that
    /// have refilled (prefixes not seen for a while) are forgotten first.
    rates: Mutex<HashMap<Prefix, TokenBucket>>,
    pub blocklist: BlockList,
    /// Where the `sessions` gauge lives.
    metrics: Arc<Metrics>,
}

impl Admissions {
    pub fn new(limits: AdmissionLimits, blocklist: BlockList, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            limits,
            sessions: Mutex::new(Counts::default()),
            handshakes: AtomicUsize::new(0),
            rates: Mutex::new(HashMap::new()),
            blocklist,
        }
    }

    pub fn handshakes_in_flight(&self) -> usize {
        self.handshakes.load(Relaxed)
    }

    /// Decides on a connection attempt; on `Accept` also returns its handshake slot.
    pub fn on_incoming(
        self: &Arc<Self>,
        ip: IpAddr,
        validated: bool,
        now: Instant,
    ) -> (IncomingDecision, Option<HandshakeSlot>) {
        let prefix = Prefix::of(ip);
        let blocked = self.blocklist.blocks(ip);
        let in_flight = self.handshakes.load(Relaxed);
        // The rate is only charged for attempts that would otherwise be accepted: a Retry
        // round trip must not use up the client's allowance.
        let would_accept = matches!(
            incoming_decision(
                in_flight,
                self.limits.max_handshakes,
                self.limits.retry_above,
                validated,
                blocked,
                true
            ),
            IncomingDecision::Accept
        );
        let rate_ok = !would_accept || self.take_rate(prefix, now);
        let decision = incoming_decision(
            in_flight,
            self.limits.max_handshakes,
            self.limits.retry_above,
            validated,
            blocked,
            rate_ok,
        );
        let slot = (decision == IncomingDecision::Accept).then(|| {
            self.handshakes.fetch_add(1, Relaxed);
            self.metrics.handshakes.fetch_add(1, Relaxed);
            HandshakeSlot {
                admissions: self.clone(),
            }
        });
        (decision, slot)
    }

    /// Forgets handshake-rate buckets that have refilled (prefixes quiet for a while: they
    /// would start full anyway), gives the table back once mostly empty, and returns how
    /// many are left. Without it the map only shed entries at [`MAX_RATE_ENTRIES`], so a
    /// relay kept a bucket for every address it had seen.
    pub fn sweep_rates(&self, now: Instant) -> usize {
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.retain(|_, b| !b.is_full(now));
        crate::reputation::shrink_if_sparse(&mut rates);
        rates.len()
    }

    fn take_rate(&self, prefix: Prefix, now: Instant) -> bool {
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let burst = f64::from(self.limits.handshake_burst.max(1));
        let per_s = f64::from(self.limits.handshakes_per_minute) / 60.0;
        if rates.len() >= MAX_RATE_ENTRIES && !rates.contains_key(&prefix) {
            rates.retain(|_, b| !b.is_full(now));
            if rates.len() >= MAX_RATE_ENTRIES {
                // Every entry is busy: the relay is under a wide attack. Refuse newcomers
                // rather than grow; the handshake cap holds the rest.
                return false;
            }
        }
        rates
            .entry(prefix)
            .or_insert_with(|| TokenBucket::new(burst, per_s, now))
            .try_take(1.0, now)
    }

    /// Takes a session slot for `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Fatal> {
        let prefix = Prefix::of(ip);
        if self.blocklist.blocks(ip) {
            return Err(Fatal::new(
                ErrorCode::Blocked,
                "This address is blocked from Duet.",
            ));
        }
        let mut counts = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.limits.max_sessions {
            return Err(Fatal::new(
                ErrorCode::ServerFull,
                format!(
                    "The relay is full ({} people). Please try again in a minute.",
                    self.limits.max_sessions
                ),
            ));
        }
        let mine = counts.per_prefix.entry(prefix).or_insert(0);
        if *mine >= self.limits.max_sessions_per_prefix {
            return Err(Fatal::new(
                ErrorCode::TooManyFromAddress,
                format!(
                    "Too many sessions from your address (limit {}). Close another tab and retry.",
                    self.limits.max_sessions_per_prefix
                ),
            ));
        }
        *mine += 1;
        counts.total += 1;
        self.metrics.sessions.fetch_add(1, Relaxed);
        Ok(Admission {
            admissions: self.clone(),
            prefix,
        })
    }

    pub fn sessions(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total
    }
}

/// A taken session slot, given back on drop whatever way the session ends.
pub struct Admission {
    admissions: Arc<Admissions>,
    pub prefix: Prefix,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self
            .admissions
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        self.admissions.metrics.sessions.fetch_sub(1, Relaxed);
        if let Some(n) = counts.per_prefix.get_mut(&self.prefix) {
            *n -= 1;
            if *n == 0 {
                counts.per_prefix.remove(&self.prefix);
            }
        }
    }
}

/// A handshake in flight, from the first packet until `Hello` (or the end).
pub struct HandshakeSlot {
    admissions: Arc<Admissions>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.admissions.handshakes.fetch_sub(1, Relaxed);
        self.admissions.metrics.handshakes.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_sessions: 3,
            max_sessions_per_prefix: 2,
            max_handshakes: 4,
            retry_above: 2,
            handshake_burst: 3,
            handshakes_per_minute: 60,
        }
    }

    fn admissions() -> Arc<Admissions> {
        Arc::new(Admissions::new(
            limits(),
            BlockList::empty(),
            Arc::new(Metrics::default()),
        ))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        assert_eq!(
            Prefix::of(ip("2001:db8:1:2::1")),
            Prefix::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Prefix::of(ip("2001:db8:1:2::1")),
            Prefix::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Prefix::of(ip("::ffff:10.0.0.1")),
            Prefix::of(ip("10.0.0.1"))
        );
        assert_eq!(
            Prefix::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn sessions_are_limited_per_prefix_and_in_total_and_given_back() {
        let a = admissions();
        let one = a.admit(ip("2001:db8::1")).expect("first");
        let _two = a.admit(ip("2001:db8::2")).expect("second in the /64");
        let third = a.admit(ip("2001:db8::3")).err().expect("the /64 is full");
        assert_eq!(third.code, ErrorCode::TooManyFromAddress);
        let _other = a.admit(ip("10.0.0.1")).expect("another address");
        let full = a.admit(ip("10.0.0.2")).err().expect("total reached");
        assert_eq!(full.code, ErrorCode::ServerFull);
        drop(one);
        assert_eq!(a.sessions(), 2);
        a.admit(ip("2001:db8::3")).expect("a slot came back");
    }

    #[test]
    fn incoming_rules() {
        use IncomingDecision::*;
        assert_eq!(incoming_decision(0, 4, 2, false, false, true), Accept);
        assert_eq!(incoming_decision(2, 4, 2, false, false, true), Retry);
        assert_eq!(incoming_decision(2, 4, 2, true, false, true), Accept);
        assert_eq!(
            incoming_decision(4, 4, 2, true, false, true),
            Refuse(RefuseWhy::TooManyHandshakes)
        );
        assert_eq!(
            incoming_decision(2, 4, 2, true, true, true),
            Refuse(RefuseWhy::Blocked)
        );
        // Not under load: let it through to be told `blocked` at admission.
        assert_eq!(incoming_decision(0, 4, 2, false, true, true), Accept);
        assert_eq!(
            incoming_decision(0, 4, 2, false, false, false),
            Refuse(RefuseWhy::HandshakeRate)
        );
    }

    #[test]
    fn handshake_slots_are_capped_and_the_rate_is_per_prefix() {
        let a = admissions();
        let t = Instant::now();
        let (d, s1) = a.on_incoming(ip("10.0.0.1"), false, t);
        assert_eq!(d, IncomingDecision::Accept);
        let (_, s2) = a.on_incoming(ip("10.0.0.1"), false, t);
        // Two in flight: the next unvalidated one is asked to Retry, and not charged.
        let (d, none) = a.on_incoming(ip("10.0.0.1"), false, t);
        assert_eq!((d, none.is_none()), (IncomingDecision::Retry, true));
        let (d, s3) = a.on_incoming(ip("10.0.0.1"), true, t);
        assert_eq!(d, IncomingDecision::Accept);
        // The burst of three is used up for 10.0.0.1, not for 10.0.0.2.
        let (d, _) = a.on_incoming(ip("10.0.0.1"), true, t);
        assert_eq!(d, IncomingDecision::Refuse(RefuseWhy::HandshakeRate));
        let (d, s4) = a.on_incoming(ip("10.0.0.2"), true, t);
        assert_eq!(d, IncomingDecision::Accept);
        assert_eq!(a.handshakes_in_flight(), 4);
        let (d, _) = a.on_incoming(ip("10.0.0.3"), true, t);
        assert_eq!(d, IncomingDecision::Refuse(RefuseWhy::TooManyHandshakes));
        drop((s1, s2, s3, s4));
        assert_eq!(a.handshakes_in_flight(), 0);
        let (d, _) = a.on_incoming(ip("10.0.0.1"), true, t + Duration::from_secs(1));
        assert_eq!(d, IncomingDecision::Accept, "the rate refills");
    }

    #[test]
    fn a_sweep_forgets_the_rate_of_prefixes_that_have_gone_quiet() {
        let a = admissions();
        let t = Instant::now();
        for last in 1..=3 {
            let (d, slot) = a.on_incoming(ip(&format!("10.0.0.{last}")), true, t);
            assert_eq!(d, IncomingDecision::Accept);
            drop(slot);
        }
        assert_eq!(
            a.sweep_rates(t),
            3,
            "each bucket still has a token to refill"
        );
        // 10.0.0.1 keeps connecting; the others refill (a token a second) and are dropped.
        let later = t + Duration::from_secs(2);
        let _ = a.on_incoming(ip("10.0.0.1"), true, later);
        let _ = a.on_incoming(ip("10.0.0.1"), true, later);
        assert_eq!(a.sweep_rates(later), 1);
        assert_eq!(a.sweep_rates(later + Duration::from_secs(60)), 0);
    }
}
