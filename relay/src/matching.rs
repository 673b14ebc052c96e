//! The matching queue: who waits, who is paired with whom, who must not meet again.
//!
//! A pure state machine with time passed in, so every rule is unit-tested without a clock
//! or a socket. The engine task ([`crate::engine`]) owns one and turns its answers into
//! messages; a clustered engine can keep the same rules over shared state.
//!
//! Rules:
//! * FIFO: whoever has waited longest is offered first.
//! * Interests: a newcomer who shares an interest with someone waiting is paired with the
//!   first such person at once. Someone with interests holds out for a shared one for at
//!   most `interest_wait`; after that (and at once, for someone with no interests) anyone
//!   who is also open to strangers will do. The engine calls [`MatchQueue::tick`] at
//!   [`MatchQueue::next_deadline`], so the bounded wait needs no polling.
//! * Nobody is in two pairs, nobody is paired with themselves, two people who skipped each
//!   other are not paired again for `skip_cooldown`, and a report keeps two apart for good.

use crate::reputation::{Person, Reputation};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub type SessionId = u64;
pub type MatchId = u64;

/// Most people one session remembers not to meet again. Each Next adds one; past this the
/// oldest skip is forgotten (a report is kept over a skip). 256 Nexts is hours of use.
pub const MAX_AVOID_PER_SESSION: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct MatchRules {
    pub interest_wait: Duration,
    pub skip_cooldown: Duration,
    /// Reports: never pair again across reconnects, and when a cooling-off starts.
    pub reputation: crate::reputation::Rules,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    pub match_id: MatchId,
    pub a: SessionId,
    pub b: SessionId,
    pub shared_interests: Vec<String>,
}

/// What happened to the other side when someone left a pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpaired {
    pub partner: SessionId,
    pub match_id: MatchId,
}

#[derive(Debug)]
struct Waiter {
    id: SessionId,
    /// From this instant on, a stranger will do.
    open_at: Instant,
}

#[derive(Debug, Default)]
struct Member {
    interests: Vec<String>,
    partner: Option<(SessionId, MatchId)>,
    waiting: bool,
    /// Connection lost, session held for a resume: not offered to anyone meanwhile.
    held: bool,
    /// Held while it would have been waiting: goes back in the queue on release.
    wants_queue: bool,
    /// Who not to meet: until an instant (a skip) or for good (`None`, a report).
    avoid: Vec<(SessionId, Option<Instant>)>,
    /// Who this is across reconnects (visitor id, address prefix), for reports.
    person: Option<Person>,
    /// When the partner leaves, stay out of the queue until this session's own Next
    /// (the client asked, so its person can read the last messages first).
    idle_when_left: bool,
}

#[derive(Debug)]
pub struct MatchQueue {
    rules: MatchRules,
    members: HashMap<SessionId, Member>,
    queue: VecDeque<Waiter>,
    next_match_id: MatchId,
    pairs: usize,
    /// Draining: people still queue (and see `Queued`), but no new pair is made.
    paused: bool,
    reputation: Reputation,
}

impl MatchQueue {
    pub fn new(rules: MatchRules) -> Self {
        Self {
            rules,
            members: HashMap::new(),
            queue: VecDeque::new(),
            next_match_id: 1,
            pairs: 0,
            paused: false,
            reputation: Reputation::new(rules.reputation),
        }
    }

    /// Says who `id` is across reconnects (before it joins).
    pub fn set_person(&mut self, id: SessionId, person: Person) {
        self.members.entry(id).or_default().person = Some(person);
    }

    /// Until when `id` is cooling off (reported by several people recently), if it is.
    pub fn cooling_until(&self, id: SessionId, now: Instant) -> Option<Instant> {
        let person = self.members.get(&id)?.person.as_ref()?;
        self.reputation.cooling_until(person, now)
    }

    /// Records that `id` reported its current partner, by who they are rather than by
    /// session. Returns the partner and the end of its cooling-off when this report
    /// starts one. Call before [`MatchQueue::report`] (which ends the pairing).
    pub fn record_report(&mut self, id: SessionId, now: Instant) -> Option<(SessionId, Instant)> {
        let (partner, _) = self.partner_of(id)?;
        let me = self.members.get(&id)?.person.clone()?;
        let them = self.members.get(&partner)?.person.clone()?;
        self.reputation
            .report(&me, &them, now)
            .map(|until| (partner, until))
    }

    /// Whether `id` goes back in the queue by itself when its partner leaves (`true`, the
    /// default) or stays idle until its own Next.
    pub fn set_requeue_when_left(&mut self, id: SessionId, on: bool) {
        if let Some(m) = self.members.get_mut(&id) {
            m.idle_when_left = !on;
        }
    }

    /// The partner `id` was left: back in the queue, unless it asked to wait.
    fn requeue_left(&mut self, id: SessionId, now: Instant) -> Vec<Pairing> {
        if self.members.get(&id).is_some_and(|m| m.idle_when_left) {
            return Vec::new();
        }
        self.enqueue(id, now)
    }

    /// Stops making pairs (the relay is draining); pairs already made are kept.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// What the engine remembers, for the `held` gauges: sessions known, skip and report
    /// entries across them, and the reputation's entries.
    pub fn memory(&self) -> (usize, usize, usize) {
        let avoid = self.members.values().map(|m| m.avoid.len()).sum();
        (self.members.len(), avoid, self.reputation.len())
    }

    /// Forgets what has expired (see [`Reputation::sweep`]) and gives back the memory of
    /// maps that have emptied out.
    pub fn sweep(&mut self, now: Instant) {
        self.reputation.sweep(now);
        crate::reputation::shrink_if_sparse(&mut self.members);
        if self.queue.capacity() > 64 && self.queue.len() * 4 < self.queue.capacity() {
            self.queue.shrink_to(self.queue.len() * 2);
        }
    }

    pub fn pairs(&self) -> usize {
        self.pairs
    }

    pub fn partner_of(&self, id: SessionId) -> Option<(SessionId, MatchId)> {
        self.members.get(&id).and_then(|m| m.partner)
    }

    pub fn is_waiting(&self, id: SessionId) -> bool {
        self.members.get(&id).is_some_and(|m| m.waiting)
    }

    /// A session joins the queue (or re-joins it after Leave). No effect if it is already
    /// waiting or paired.
    pub fn join(&mut self, id: SessionId, interests: Vec<String>, now: Instant) -> Vec<Pairing> {
        let member = self.members.entry(id).or_default();
        if member.waiting || member.partner.is_some() {
            return Vec::new();
        }
        member.interests = interests;
        self.enqueue(id, now)
    }

    /// Next: `id` leaves its partner and re-queues at once; the partner is re-queued too,
    /// after it, so the one who pressed Next gets the first pick. From the queue or idle,
    /// Next just (re-)joins. `expected` guards against a stale press: a Next aimed at a
    /// pairing that has already ended does not end the new one.
    pub fn next(
        &mut self,
        id: SessionId,
        expected: Option<MatchId>,
        now: Instant,
    ) -> (Option<Unpaired>, Vec<Pairing>) {
        let Some(member) = self.members.get(&id) else {
            return (None, Vec::new());
        };
        if let (Some((_, current)), Some(expected)) = (member.partner, expected) {
            if current != expected {
                return (None, Vec::new());
            }
        }
        if member.waiting {
            return (None, Vec::new());
        }
        let until = Some(now + self.rules.skip_cooldown);
        let left = self.unpair(id, until);
        let mut pairings = self.enqueue(id, now);
        if let Some(l) = &left {
            pairings.extend(self.requeue_left(l.partner, now));
        }
        (left, pairings)
    }

    /// Report: like Next, but the two are never paired again.
    pub fn report(&mut self, id: SessionId, now: Instant) -> (Option<Unpaired>, Vec<Pairing>) {
        if self.members.get(&id).and_then(|m| m.partner).is_none() {
            return (None, Vec::new());
        }
        let left = self.unpair(id, None);
        let mut pairings = self.enqueue(id, now);
        if let Some(l) = &left {
            pairings.extend(self.requeue_left(l.partner, now));
        }
        (left, pairings)
    }

    /// Leave (Stop): `id` leaves its partner and the queue but stays known (it may join
    /// again). The partner is re-queued.
    pub fn leave(&mut self, id: SessionId, now: Instant) -> (Option<Unpaired>, Vec<Pairing>) {
        self.dequeue(id);
        let left = self.unpair(id, Some(now + self.rules.skip_cooldown));
        let pairings = match &left {
            Some(l) => self.requeue_left(l.partner, now),
            None => Vec::new(),
        };
        (left, pairings)
    }

    /// The session is gone for good: forget it entirely.
    pub fn remove(&mut self, id: SessionId, now: Instant) -> (Option<Unpaired>, Vec<Pairing>) {
        let out = self.leave(id, now);
        self.members.remove(&id);
        out
    }

    /// When [`MatchQueue::tick`] should next run: the earliest moment a waiter becomes
    /// open to strangers.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.queue
            .iter()
            .map(|w| w.open_at)
            .filter(|t| *t > now)
            .min()
    }

    /// Pairs waiters whose wait for a shared interest has run out.
    pub fn tick(&mut self, now: Instant) -> Vec<Pairing> {
        let mut out = Vec::new();
        if self.paused {
            return out;
        }
        let mut i = 0;
        while i < self.queue.len() {
            let (id, open) = (self.queue[i].id, self.queue[i].open_at <= now);
            if open {
                if let Some(j) = self.find_stranger(id, now, Some(i)) {
                    let other = self.queue[j].id;
                    // Remove the later index first so the earlier stays valid.
                    self.queue.remove(j.max(i));
                    self.queue.remove(j.min(i));
                    out.push(self.pair(id, other));
                    continue; // position i now holds the next waiter
                }
            }
            i += 1;
        }
        out
    }

    /// Holds a session whose connection was lost: it keeps its pairing (if any) but is not
    /// offered to anyone until [`MatchQueue::release`].
    pub fn hold(&mut self, id: SessionId) {
        let was_waiting = self.is_waiting(id);
        self.dequeue(id);
        if let Some(m) = self.members.get_mut(&id) {
            m.held = true;
            m.wants_queue = was_waiting;
        }
    }

    /// The held session is back: if it was waiting (or was left while away), it re-queues.
    pub fn release(&mut self, id: SessionId, now: Instant) -> Vec<Pairing> {
        let Some(m) = self.members.get_mut(&id) else {
            return Vec::new();
        };
        m.held = false;
        if std::mem::take(&mut m.wants_queue) && m.partner.is_none() {
            return self.enqueue(id, now);
        }
        Vec::new()
    }

    pub fn is_held(&self, id: SessionId) -> bool {
        self.members.get(&id).is_some_and(|m| m.held)
    }

    fn enqueue(&mut self, id: SessionId, now: Instant) -> Vec<Pairing> {
        if let Some(m) = self.members.get_mut(&id) {
            if m.held {
                m.wants_queue = true;
                return Vec::new();
            }
        }
        if self.paused {
            self.queue.push_back(Waiter { id, open_at: now });
            if let Some(m) = self.members.get_mut(&id) {
                m.waiting = true;
            }
            return Vec::new();
        }
        if let Some(j) = self.find_shared(id, now) {
            let Some(w) = self.queue.remove(j) else {
                return Vec::new();
            };
            return vec![self.pair(id, w.id)];
        }
        let has_interests = self
            .members
            .get(&id)
            .is_some_and(|m| !m.interests.is_empty());
        let open_at = if has_interests {
            now + self.rules.interest_wait
        } else {
            now
        };
        if open_at <= now {
            if let Some(j) = self.find_stranger(id, now, None) {
                let Some(w) = self.queue.remove(j) else {
                    return Vec::new();
                };
                return vec![self.pair(id, w.id)];
            }
        }
        self.queue.push_back(Waiter { id, open_at });
        if let Some(m) = self.members.get_mut(&id) {
            m.waiting = true;
        }
        Vec::new()
    }

    fn dequeue(&mut self, id: SessionId) {
        self.queue.retain(|w| w.id != id);
        if let Some(m) = self.members.get_mut(&id) {
            m.waiting = false;
        }
    }

    /// First waiter (FIFO) who shares an interest with `id` and may meet them.
    fn find_shared(&self, id: SessionId, now: Instant) -> Option<usize> {
        let me = self.members.get(&id)?;
        if me.interests.is_empty() {
            return None;
        }
        self.queue.iter().position(|w| {
            w.id != id
                && self.may_meet(id, w.id, now)
                && self
                    .members
                    .get(&w.id)
                    .is_some_and(|o| o.interests.iter().any(|i| me.interests.contains(i)))
        })
    }

    /// First waiter (FIFO) open to strangers whom `id` may meet, skipping index `skip`.
    fn find_stranger(&self, id: SessionId, now: Instant, skip: Option<usize>) -> Option<usize> {
        self.queue.iter().enumerate().position(|(j, w)| {
            Some(j) != skip && w.id != id && w.open_at <= now && self.may_meet(id, w.id, now)
        })
    }

    fn may_meet(&self, a: SessionId, b: SessionId, now: Instant) -> bool {
        let avoids = |x: SessionId, y: SessionId| {
            self.members.get(&x).is_some_and(|m| {
                m.avoid
                    .iter()
                    .any(|(o, until)| *o == y && until.is_none_or(|t| t > now))
            })
        };
        let reported = match (
            self.members.get(&a).and_then(|m| m.person.as_ref()),
            self.members.get(&b).and_then(|m| m.person.as_ref()),
        ) {
            (Some(x), Some(y)) => !self.reputation.may_meet(x, y),
            _ => false,
        };
        a != b && !avoids(a, b) && !avoids(b, a) && !reported
    }

    fn pair(&mut self, a: SessionId, b: SessionId) -> Pairing {
        let match_id = self.next_match_id;
        self.next_match_id += 1;
        let shared_interests = match (self.members.get(&a), self.members.get(&b)) {
            (Some(x), Some(y)) => x
                .interests
                .iter()
                .filter(|i| y.interests.contains(i))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        for (me, other) in [(a, b), (b, a)] {
            if let Some(m) = self.members.get_mut(&me) {
                m.waiting = false;
                m.partner = Some((other, match_id));
            }
        }
        self.pairs += 1;
        Pairing {
            match_id,
            a,
            b,
            shared_interests,
        }
    }

    /// Ends `id`'s pairing, if any, and makes the two avoid each other until `until`
    /// (`None`: for good).
    fn unpair(&mut self, id: SessionId, until: Option<Instant>) -> Option<Unpaired> {
        let (partner, match_id) = self.members.get_mut(&id)?.partner.take()?;
        if let Some(p) = self.members.get_mut(&partner) {
            p.partner = None;
        }
        self.pairs = self.pairs.saturating_sub(1);
        for (me, other) in [(id, partner), (partner, id)] {
            if let Some(m) = self.members.get_mut(&me) {
                remember(&mut m.avoid, other, until);
            }
        }
        Some(Unpaired { partner, match_id })
    }
}

fn remember(
    avoid: &mut Vec<(SessionId, Option<Instant>)>,
    other: SessionId,
    until: Option<Instant>,
) {
    if let Some(entry) = avoid.iter_mut().find(|(o, _)| *o == other) {
        // A report (None) is never weakened into a skip.
        if entry.1.is_some() {
            entry.1 = until;
        }
        return;
    }
    if avoid.len() >= MAX_AVOID_PER_SESSION {
        let oldest_skip = avoid.iter().position(|(_, u)| u.is_some()).unwrap_or(0);
        avoid.remove(oldest_skip);
    }
    avoid.push((other, until));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> MatchRules {
        MatchRules {
            interest_wait: Duration::from_secs(3),
            skip_cooldown: Duration::from_secs(60),
            reputation: crate::reputation::Rules {
                reports: 3,
                window: Duration::from_secs(600),
                cooling_off: Duration::from_secs(900),
            },
        }
    }

    #[test]
    fn a_report_keeps_the_two_people_apart_after_they_reconnect() {
        use crate::admission::Prefix;
        let person =
            |v: u8, ip: &str| Person::new(Some([v; 16]), Prefix::of(ip.parse().expect("ip")));
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        q.set_person(1, person(1, "10.0.0.1"));
        q.set_person(2, person(2, "10.0.0.2"));
        q.join(1, vec![], t);
        assert_eq!(q.join(2, vec![], t).len(), 1);
        assert_eq!(q.record_report(1, t), None);
        q.report(1, t);
        // Both reconnect as new sessions (new ids), the same people.
        q.remove(1, t);
        q.remove(2, t);
        q.set_person(3, person(1, "10.0.0.1"));
        q.set_person(4, person(2, "10.0.0.2"));
        q.join(3, vec![], t);
        assert!(q.join(4, vec![], t).is_empty(), "never paired again");
        q.set_person(5, person(5, "10.0.0.5"));
        assert_eq!(q.join(5, vec![], t).len(), 1, "others still meet them");
    }

    fn pair_of(p: &Pairing) -> (SessionId, SessionId) {
        (p.a.min(p.b), p.a.max(p.b))
    }

    #[test]
    fn paused_queue_keeps_pairs_but_makes_none() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        q.join(1, vec![], t);
        assert_eq!(q.join(2, vec![], t).len(), 1);
        q.pause();
        assert!(q.join(3, vec![], t).is_empty());
        let (left, pairings) = q.next(1, None, t);
        assert!(left.is_some());
        assert!(pairings.is_empty(), "{pairings:?}");
        assert!(q.tick(t + Duration::from_secs(10)).is_empty());
        assert_eq!((q.waiting(), q.pairs()), (3, 0));
    }

    #[test]
    fn two_strangers_pair_the_moment_the_second_arrives() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        assert!(q.join(1, vec![], t).is_empty());
        assert_eq!(q.waiting(), 1);
        let p = q.join(2, vec![], t);
        assert_eq!(p.len(), 1);
        assert_eq!(pair_of(&p[0]), (1, 2));
        assert_eq!((q.waiting(), q.pairs()), (0, 1));
        // Joining again while paired does nothing.
        assert!(q.join(1, vec![], t).is_empty());
        assert_eq!(q.partner_of(1).map(|x| x.0), Some(2));
    }

    #[test]
    fn nobody_is_paired_with_themselves() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        assert!(q.join(1, vec![], t).is_empty());
        assert!(q.join(1, vec![], t).is_empty());
        assert!(q.tick(t + Duration::from_secs(10)).is_empty());
        assert_eq!(q.waiting(), 1);
    }

    #[test]
    fn shared_interest_first_and_the_wait_for_it_is_bounded() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        // A stranger with no interests waits first.
        assert!(q.join(1, vec![], t).is_empty());
        // Someone who likes chess holds out for chess.
        assert!(q.join(2, vec!["chess".into()], t).is_empty());
        // A chess fan arrives: paired with 2, not with 1 who waited longer.
        let p = q.join(3, vec!["chess".into(), "jazz".into()], t);
        assert_eq!(pair_of(&p[0]), (2, 3));
        assert_eq!(p[0].shared_interests, vec!["chess".to_string()]);
        // Someone who likes jazz and finds no one waits at most interest_wait.
        assert!(q.join(4, vec!["jazz".into()], t).is_empty());
        assert_eq!(q.next_deadline(t), Some(t + Duration::from_secs(3)));
        assert!(q.tick(t + Duration::from_millis(2999)).is_empty());
        let p = q.tick(t + Duration::from_secs(3));
        assert_eq!(pair_of(&p[0]), (1, 4));
        assert!(p[0].shared_interests.is_empty());
    }

    #[test]
    fn next_requeues_both_and_they_do_not_meet_again_soon() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        q.join(1, vec![], t);
        let m = q.join(2, vec![], t)[0].match_id;
        q.join(3, vec![], t); // waiting
        let (left, p) = q.next(1, Some(m), t);
        assert_eq!(
            left,
            Some(Unpaired {
                partner: 2,
                match_id: m
            })
        );
        assert_eq!(p.len(), 1);
        assert_eq!(
            pair_of(&p[0]),
            (1, 3),
            "the presser gets the waiting person"
        );
        assert!(q.is_waiting(2));
        // 2 and 1 are kept apart during the cooldown, even if both are free.
        let (_, p) = q.next(3, None, t);
        assert!(p.is_empty() || pair_of(&p[0]) != (1, 2));
        let (_, p) = q.next(1, None, t + Duration::from_secs(1));
        assert!(p.iter().all(|x| pair_of(x) != (1, 2)));
        // After the cooldown they may.
        let later = t + Duration::from_secs(61);
        let (_, p) = q.leave(3, later);
        assert_eq!(p.iter().map(pair_of).collect::<Vec<_>>(), vec![(1, 2)]);
    }

    #[test]
    fn a_stale_next_does_not_end_the_new_pairing() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        q.join(1, vec![], t);
        let old = q.join(2, vec![], t)[0].match_id;
        q.remove(2, t);
        let new = q.join(3, vec![], t)[0].match_id;
        assert_ne!(old, new);
        assert_eq!(q.next(1, Some(old), t), (None, vec![]));
        assert_eq!(q.partner_of(1), Some((3, new)));
    }

    #[test]
    fn a_report_keeps_two_apart_for_good() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        q.join(1, vec![], t);
        q.join(2, vec![], t);
        let (left, p) = q.report(1, t);
        assert_eq!(left.map(|l| l.partner), Some(2));
        assert!(p.is_empty());
        assert!(q.tick(t + Duration::from_secs(3600)).is_empty());
        assert_eq!(q.waiting(), 2);
    }

    #[test]
    fn leaving_and_vanishing_requeue_the_partner() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        q.join(1, vec![], t);
        q.join(2, vec![], t);
        let (left, _) = q.remove(1, t);
        assert_eq!(left.map(|l| l.partner), Some(2));
        assert!(q.is_waiting(2));
        assert_eq!(q.pairs(), 0);
        let p = q.join(3, vec![], t);
        assert_eq!(pair_of(&p[0]), (2, 3));
    }

    #[test]
    fn a_session_that_asked_to_wait_is_not_requeued_when_left_but_its_next_queues_it() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        q.join(1, vec![], t);
        let m = q.join(2, vec![], t)[0].match_id;
        q.set_requeue_when_left(2, false);
        q.join(3, vec![], t); // waiting: would take 2 at once
                              // 1 presses Next: 1 meets 3; 2 is told (left) but stays out of the queue.
        let (left, p) = q.next(1, Some(m), t);
        assert_eq!(left.map(|l| l.partner), Some(2));
        assert_eq!(p.iter().map(pair_of).collect::<Vec<_>>(), vec![(1, 3)]);
        assert!(!q.is_waiting(2));
        assert_eq!(q.partner_of(2), None);
        // Leave, Report and vanishing leave it idle the same way.
        let m = q.join(4, vec![], t);
        assert!(m.is_empty(), "4 waits: 2 is idle, 1 and 3 are paired");
        let (_, p) = q.next(2, None, t);
        assert_eq!(p.iter().map(pair_of).collect::<Vec<_>>(), vec![(2, 4)]);
        q.remove(4, t);
        assert!(!q.is_waiting(2), "vanishing partner: still idle");
        // Turned back on, it is re-queued as before.
        q.set_requeue_when_left(2, true);
        q.next(2, None, t);
        assert_eq!(q.join(5, vec![], t).len(), 1);
        q.leave(5, t);
        assert!(q.is_waiting(2));
    }

    #[test]
    fn many_joins_pair_everyone_exactly_once() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        let mut pairs = Vec::new();
        for id in 0..200 {
            pairs.extend(q.join(id, vec![], t));
        }
        assert_eq!(pairs.len(), 100);
        let mut seen: Vec<SessionId> = pairs.iter().flat_map(|p| [p.a, p.b]).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 200);
    }

    #[test]
    fn a_held_session_keeps_its_partner_and_is_offered_to_nobody() {
        let mut q = MatchQueue::new(rules());
        let t = Instant::now();
        q.join(1, vec![], t);
        let m = q.join(2, vec![], t)[0].match_id;
        q.hold(1);
        assert_eq!(
            q.partner_of(2),
            Some((1, m)),
            "the pairing survives the hold"
        );
        // The partner leaves meanwhile: 1 is not re-queued while held...
        let (left, _) = q.next(2, Some(m), t);
        assert_eq!(left.map(|l| l.partner), Some(1));
        assert!(!q.is_waiting(1));
        let p = q.join(3, vec![], t);
        assert_eq!(
            p.iter().map(pair_of).collect::<Vec<_>>(),
            vec![(2, 3)],
            "not the held 1"
        );
        // ...and goes back to the queue when it returns.
        assert!(q.release(1, t).is_empty());
        assert!(q.is_waiting(1));
        // Held while waiting: out of the queue, back in on release.
        let mut q = MatchQueue::new(rules());
        q.join(4, vec![], t);
        q.hold(4);
        assert!(q.join(5, vec![], t).is_empty());
        assert_eq!(
            q.release(4, t).iter().map(pair_of).collect::<Vec<_>>(),
            vec![(4, 5)]
        );
    }

    #[test]
    fn avoid_lists_are_bounded() {
        let mut avoid = Vec::new();
        let t = Instant::now();
        remember(&mut avoid, 0, None);
        for other in 1..1000 {
            remember(&mut avoid, other, Some(t));
        }
        assert_eq!(avoid.len(), MAX_AVOID_PER_SESSION);
        assert!(avoid.contains(&(0, None)), "the report is kept over skips");
    }
}
