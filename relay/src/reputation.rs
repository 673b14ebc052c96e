//! What abuse reports leave behind, bound to who a person is across reconnects rather
//! than to a session id: their visitor id (a random id the browser keeps across visits)
//! and their address prefix (IPv4 address or IPv6 /64).
//!
//! * **Never pair again.** A report keeps the two apart for good: both by visitor ids and
//!   by prefixes, so neither a reconnect nor a cleared visitor id brings them together.
//!   (The prefix pair also keeps apart others on those two networks, a small cost for the
//!   person who reported; two people on the same prefix are kept apart by visitor id only.)
//! * **Cooling-off.** Someone reported by [`Rules::reports`] distinct people within
//!   [`Rules::window`] is not paired for [`Rules::cooling_off`]: their session is closed
//!   with `cooling_off`, and a new one is refused with the same code until it ends. It is
//!   keyed by the visitor id (by the prefix only for a client that sends none), so one
//!   person does not cool off a whole household or carrier NAT.
//!
//! Pure, with time passed in; the memory is bounded ([`MAX_REMEMBERED`]).

use crate::admission::Prefix;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// Report pairs and reported people remembered; past it the oldest are forgotten. Each
/// entry is tens of bytes: 100 000 is a few MB, weeks of reports on a busy relay.
pub const MAX_REMEMBERED: usize = 100_000;

/// Who a person is, as far as a reconnect keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersonKey {
    Visitor([u8; 16]),
    Prefix(Prefix),
}

/// A person's keys: the visitor id when the client sent one, and always the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub keys: Vec<PersonKey>,
}

impl Person {
    pub fn new(visitor: Option<[u8; 16]>, prefix: Prefix) -> Self {
        let mut keys = vec![PersonKey::Prefix(prefix)];
        if let Some(v) = visitor {
            keys.insert(0, PersonKey::Visitor(v));
        }
        Self { keys }
    }

    /// The stable key that counts as "one distinct reporter": the visitor id if any, else
    /// the prefix (so one person cannot count twice by reconnecting).
    fn reporter_key(&self) -> PersonKey {
        self.keys[0]
    }
}

fn pair_hash(a: &PersonKey, b: &PersonKey) -> u64 {
    let (x, y) = if hash_of(a) <= hash_of(b) {
        (a, b)
    } else {
        (b, a)
    };
    let mut h = DefaultHasher::new();
    (x, y).hash(&mut h);
    h.finish()
}

fn hash_of(k: &PersonKey) -> u64 {
    let mut h = DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub reports: usize,
    pub window: Duration,
    pub cooling_off: Duration,
}

#[derive(Debug)]
pub struct Reputation {
    rules: Rules,
    /// Pairs of keys (same kind) that must never meet.
    apart: HashSet<u64>,
    apart_order: VecDeque<u64>,
    /// Per reported key: who reported it and when, within the window.
    reports: HashMap<PersonKey, Vec<(PersonKey, Instant)>>,
    /// Per key: cooling off until.
    cooling: HashMap<PersonKey, Instant>,
}

impl Reputation {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            apart: HashSet::new(),
            apart_order: VecDeque::new(),
            reports: HashMap::new(),
            cooling: HashMap::new(),
        }
    }

    /// Whether these two may be paired.
    pub fn may_meet(&self, a: &Person, b: &Person) -> bool {
        a.keys.iter().all(|ka| {
            b.keys
                .iter()
                .filter(|kb| std::mem::discriminant(*kb) == std::mem::discriminant(ka))
                .all(|kb| !self.apart.contains(&pair_hash(ka, kb)))
        })
    }

    /// `reporter` reported `reported`. Returns `Some(until)` when this report puts the
    /// reported person into cooling-off.
    pub fn report(
        &mut self,
        reporter: &Person,
        reported: &Person,
        now: Instant,
    ) -> Option<Instant> {
        for ka in &reporter.keys {
            for kb in reported
                .keys
                .iter()
                .filter(|kb| std::mem::discriminant(*kb) == std::mem::discriminant(ka))
            {
                if ka == kb {
                    // Two people behind one address: keeping that address apart from
                    // itself would stop everyone there meeting each other.
                    continue;
                }
                let h = pair_hash(ka, kb);
                if self.apart.insert(h) {
                    self.apart_order.push_back(h);
                }
            }
        }
        while self.apart_order.len() > MAX_REMEMBERED {
            if let Some(old) = self.apart_order.pop_front() {
                self.apart.remove(&old);
            }
        }
        let window = self.rules.window;
        let by = reporter.reporter_key();
        let mut cooling = None;
        // Counted against the person's own key (the visitor id when there is one), not
        // the prefix, so a household or a carrier's NAT is not cooled off for one person.
        for key in [reported.reporter_key()].iter() {
            if self.reports.len() >= MAX_REMEMBERED && !self.reports.contains_key(key) {
                self.reports.retain(|_, v| {
                    v.iter()
                        .any(|(_, t)| now.saturating_duration_since(*t) < window)
                });
                if self.reports.len() >= MAX_REMEMBERED {
                    continue;
                }
            }
            let list = self.reports.entry(*key).or_default();
            list.retain(|(_, t)| now.saturating_duration_since(*t) < window);
            if !list.iter().any(|(r, _)| *r == by) {
                list.push((by, now));
            }
            if list.len() >= self.rules.reports.max(1) {
                let until = now + self.rules.cooling_off;
                self.cooling.insert(*key, until);
                list.clear();
                cooling = Some(until);
            }
        }
        self.cooling.retain(|_, until| *until > now);
        cooling
    }

    /// Forgets reports older than the window and cooling-offs that are over, and gives
    /// the maps' memory back once they are mostly empty. The engine calls it every
    /// second, so what a quiet relay holds is what the rules still need.
    pub fn sweep(&mut self, now: Instant) {
        let window = self.rules.window;
        self.reports.retain(|_, v| {
            v.retain(|(_, t)| now.saturating_duration_since(*t) < window);
            !v.is_empty()
        });
        self.cooling.retain(|_, until| *until > now);
        shrink_if_sparse(&mut self.reports);
        shrink_if_sparse(&mut self.cooling);
    }

    /// Entries held: pairs kept apart, reported people, people cooling off.
    pub fn len(&self) -> usize {
        self.apart.len() + self.reports.len() + self.cooling.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Until when `person` is cooling off, if they are.
    pub fn cooling_until(&self, person: &Person, now: Instant) -> Option<Instant> {
        person
            .keys
            .iter()
            .filter_map(|k| self.cooling.get(k))
            .filter(|until| **until > now)
            .max()
            .copied()
    }
}

/// A map that has emptied out gives most of its table back (a `HashMap` never shrinks by
/// itself): below a quarter full, down to twice what it holds.
pub fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(visitor: u8, ip: &str) -> Person {
        Person::new(
            Some([visitor; 16]),
            Prefix::of(ip.parse().expect("literal")),
        )
    }

    fn rules() -> Rules {
        Rules {
            reports: 3,
            window: Duration::from_secs(600),
            cooling_off: Duration::from_secs(900),
        }
    }

    #[test]
    fn a_report_survives_reconnects_by_visitor_and_by_prefix() {
        let mut r = Reputation::new(rules());
        let t = Instant::now();
        let (a, b) = (person(1, "10.0.0.1"), person(2, "10.0.0.2"));
        assert!(r.may_meet(&a, &b));
        r.report(&a, &b, t);
        assert!(!r.may_meet(&a, &b));
        assert!(!r.may_meet(&b, &a));
        // B reconnects from another network with the same visitor id: still apart.
        assert!(!r.may_meet(&a, &person(2, "192.0.2.9")));
        // B clears its visitor id but comes from the same address: still apart.
        let anon = Person::new(None, Prefix::of("10.0.0.2".parse().expect("ip")));
        assert!(!r.may_meet(&a, &anon));
        // Others are unaffected.
        assert!(r.may_meet(&a, &person(3, "10.0.0.3")));
        // Behind one address, a report keeps apart only the two people.
        let (x, y) = (person(4, "10.0.0.7"), person(5, "10.0.0.7"));
        r.report(&x, &y, t);
        assert!(!r.may_meet(&x, &y));
        assert!(r.may_meet(&x, &person(6, "10.0.0.7")));
    }

    #[test]
    fn three_distinct_reporters_within_the_window_start_a_cooling_off() {
        let mut r = Reputation::new(rules());
        let t = Instant::now();
        let bad = person(9, "10.9.9.9");
        assert_eq!(r.report(&person(1, "10.0.0.1"), &bad, t), None);
        // The same reporter again, even from another address, counts once.
        assert_eq!(r.report(&person(1, "10.0.0.5"), &bad, t), None);
        assert_eq!(r.report(&person(2, "10.0.0.2"), &bad, t), None);
        let until = r
            .report(&person(3, "10.0.0.3"), &bad, t)
            .expect("cooling off");
        assert_eq!(until, t + Duration::from_secs(900));
        assert_eq!(r.cooling_until(&bad, t), Some(until));
        // The same visitor from another address is still cooling off; someone else at the
        // same address is not.
        assert!(r.cooling_until(&person(9, "192.0.2.1"), t).is_some());
        assert!(r.cooling_until(&person(42, "10.9.9.9"), t).is_none());
        assert_eq!(r.cooling_until(&bad, until), None, "it ends");
    }

    #[test]
    fn reports_outside_the_window_do_not_add_up() {
        let mut r = Reputation::new(rules());
        let t = Instant::now();
        let bad = person(9, "10.9.9.9");
        r.report(&person(1, "10.0.0.1"), &bad, t);
        r.report(&person(2, "10.0.0.2"), &bad, t);
        let late = t + Duration::from_secs(601);
        assert_eq!(r.report(&person(3, "10.0.0.3"), &bad, late), None);
    }

    #[test]
    fn a_sweep_forgets_old_reports_and_ended_cooling_offs_but_keeps_people_apart() {
        let mut r = Reputation::new(rules());
        let t = Instant::now();
        let target = person(9, "10.0.0.9");
        for k in 1..=3 {
            r.report(&person(k, &format!("10.0.1.{k}")), &target, t);
        }
        r.report(&person(4, "10.0.1.4"), &person(8, "10.0.0.8"), t);
        assert!(r.cooling_until(&target, t).is_some());
        r.sweep(t);
        let held = r.len();
        assert!(held > r.apart.len(), "a report and a cooling-off are held");
        r.sweep(t + Duration::from_secs(1));
        assert_eq!(r.len(), held, "nothing is due yet");
        // Past the window and the cooling-off: only the pairs kept apart for good remain.
        r.sweep(t + Duration::from_secs(901));
        assert!(r
            .cooling_until(&target, t + Duration::from_secs(901))
            .is_none());
        assert!(!r.may_meet(&person(1, "10.0.1.1"), &target));
        assert_eq!(r.len(), r.apart.len());
    }
}
