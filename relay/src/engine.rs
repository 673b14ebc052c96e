//! The matching engine: one task that owns the [`MatchQueue`] and tells sessions what
//! happened to them.
//!
//! Sessions talk to it only through [`Matchmaker`] (join, next, leave, report, gone) and
//! hear back through their own bounded event channel ([`SessionEvent`]). That small
//! surface is what a clustered engine replaces. The engine never awaits a session: a
//! session whose event queue is full is stuck, and is treated as gone.
//!
//! Pairing is immediate on every command; the one pairing timer is the earliest moment a
//! waiter's wait for a shared interest runs out, so nothing polls for pairs. Once a second
//! the engine sweeps what has expired (old reports, ended cooling-offs) and publishes how
//! much it holds (the `held` gauges).

use crate::limits::ENGINE_INBOX;
use crate::matching::{MatchId, MatchQueue, MatchRules, Pairing, SessionId, Unpaired};
use crate::metrics::{Held, Metrics};
use crate::peer::{Peer, SessionEvent};
use duet_proto::LeaveReason;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the engine sweeps expired memory and updates its `held` gauges. The sum over
/// sessions it takes is a few microseconds per thousand sessions.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
enum Command {
    Join {
        peer: Arc<Peer>,
        interests: Vec<String>,
    },
    Next {
        id: SessionId,
        expected: Option<MatchId>,
    },
    Leave {
        id: SessionId,
    },
    Report {
        id: SessionId,
    },
    Hold {
        id: SessionId,
    },
    Release {
        id: SessionId,
    },
    /// Whether `id` goes back in the queue by itself when its partner leaves.
    RequeueWhenLeft {
        id: SessionId,
        on: bool,
    },
    /// Stop making pairs: the relay is draining.
    Drain,
    Gone {
        id: SessionId,
        reason: LeaveReason,
    },
}

/// The handle sessions hold. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Matchmaker {
    tx: mpsc::Sender<Command>,
}

impl Matchmaker {
    /// Starts the engine task. It ends when every handle is dropped.
    pub fn start(rules: MatchRules, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(ENGINE_INBOX);
        let engine = Engine {
            queue: MatchQueue::new(rules),
            links: HashMap::new(),
            metrics,
        };
        tokio::spawn(engine.run(rx));
        Self { tx }
    }

    pub async fn join(&self, peer: Arc<Peer>, interests: Vec<String>) {
        self.send(Command::Join { peer, interests }).await;
    }

    pub async fn next(&self, id: SessionId, expected: Option<MatchId>) {
        self.send(Command::Next { id, expected }).await;
    }

    pub async fn leave(&self, id: SessionId) {
        self.send(Command::Leave { id }).await;
    }

    pub async fn report(&self, id: SessionId) {
        self.send(Command::Report { id }).await;
    }

    /// The session's connection was lost; it may come back (see `MatchQueue::hold`).
    pub async fn hold(&self, id: SessionId) {
        self.send(Command::Hold { id }).await;
    }

    /// The held session is back (its new connection is already in its [`Peer`]).
    pub async fn release(&self, id: SessionId) {
        self.send(Command::Release { id }).await;
    }

    /// Whether `id` goes back in the queue by itself when its partner leaves (the default)
    /// or waits, idle, for its own `Next`.
    pub async fn requeue_when_left(&self, id: SessionId, on: bool) {
        self.send(Command::RequeueWhenLeft { id, on }).await;
    }

    /// Stop making pairs; calls already made go on.
    pub async fn drain(&self) {
        self.send(Command::Drain).await;
    }

    /// The session has ended; its partner is told `reason`.
    pub async fn gone(&self, id: SessionId, reason: LeaveReason) {
        self.send(Command::Gone { id, reason }).await;
    }

    async fn send(&self, cmd: Command) {
        // Fails only when the engine has stopped, i.e. the relay is shutting down.
        let _ = self.tx.send(cmd).await;
    }
}

struct Engine {
    queue: MatchQueue,
    links: HashMap<SessionId, Arc<Peer>>,
    metrics: Arc<Metrics>,
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.queue.next_deadline(Instant::now().into_std());
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => return,
                },
                _ = sweep.tick() => {
                    self.queue.sweep(Instant::now().into_std());
                    crate::reputation::shrink_if_sparse(&mut self.links);
                    let (members, avoid, reputation) = self.queue.memory();
                    self.metrics.held(Held::MatchMembers, members);
                    self.metrics.held(Held::AvoidEntries, avoid);
                    self.metrics.held(Held::Reputation, reputation);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let pairings = self.queue.tick(Instant::now().into_std());
                    // Sessions that could not be told are dropped here too: ignoring them
                    // would leave their new partners in a call with nobody.
                    let stuck = self.announce(pairings);
                    self.remove_stuck(stuck);
                }
            }
            self.metrics
                .waiting
                .store(self.queue.waiting() as u64, Relaxed);
            self.metrics.pairs.store(self.queue.pairs() as u64, Relaxed);
        }
    }

    fn handle(&mut self, cmd: Command) {
        let now = Instant::now().into_std();
        let stuck = match cmd {
            Command::Join { peer, interests } => {
                let id = peer.id;
                self.queue.set_person(id, peer.person.clone());
                if let Some(until) = self.queue.cooling_until(id, now) {
                    peer.kick(cooling_off(until, now));
                    self.queue.remove(id, now);
                    return;
                }
                self.links.insert(id, peer);
                let pairings = self.queue.join(id, interests, now);
                let mut stuck = self.announce(pairings);
                stuck.extend(self.tell_if_waiting(id));
                stuck
            }
            Command::Next { id, expected } => {
                self.metrics.nexts.fetch_add(1, Relaxed);
                let (left, pairings) = self.queue.next(id, expected, now);
                self.after_unpair(id, left, pairings, LeaveReason::Next)
            }
            Command::Report { id } => {
                if let Some((reported, until)) = self.queue.record_report(id, now) {
                    tracing::info!(
                        session = reported,
                        "reported by several people: cooling off"
                    );
                    self.metrics.cooling_offs.fetch_add(1, Relaxed);
                    if let Some(peer) = self.links.get(&reported) {
                        peer.kick(cooling_off(until, now));
                    }
                }
                let (left, pairings) = self.queue.report(id, now);
                self.after_unpair(id, left, pairings, LeaveReason::Reported)
            }
            Command::Leave { id } => {
                let (left, pairings) = self.queue.leave(id, now);
                self.after_unpair(id, left, pairings, LeaveReason::Left)
            }
            Command::Hold { id } => {
                self.queue.hold(id);
                Vec::new()
            }
            Command::RequeueWhenLeft { id, on } => {
                self.queue.set_requeue_when_left(id, on);
                Vec::new()
            }
            Command::Drain => {
                self.queue.pause();
                Vec::new()
            }
            Command::Release { id } => {
                let pairings = self.queue.release(id, now);
                let mut stuck = self.announce(pairings);
                stuck.extend(self.tell_if_waiting(id));
                stuck
            }
            Command::Gone { id, reason } => {
                self.remove(id, reason);
                Vec::new()
            }
        };
        self.remove_stuck(stuck);
    }

    fn remove_stuck(&mut self, stuck: Vec<SessionId>) {
        for id in stuck {
            self.remove(id, LeaveReason::Disconnected);
        }
    }

    /// Tells the partner who was left, announces new pairings, and tells whoever is
    /// waiting now. Returns sessions that could not be told.
    fn after_unpair(
        &mut self,
        id: SessionId,
        left: Option<Unpaired>,
        pairings: Vec<Pairing>,
        reason: LeaveReason,
    ) -> Vec<SessionId> {
        let mut stuck = Vec::new();
        if let Some(l) = &left {
            let event = SessionEvent::PartnerLeft {
                match_id: l.match_id,
                reason,
            };
            stuck.extend(self.tell(l.partner, event));
        }
        stuck.extend(self.announce(pairings));
        stuck.extend(self.tell_if_waiting(id));
        if let Some(l) = left {
            stuck.extend(self.tell_if_waiting(l.partner));
        }
        stuck
    }

    fn remove(&mut self, id: SessionId, reason: LeaveReason) {
        // Removing one session can strand another whose queue is full; handle them all.
        let mut gone = vec![(id, reason)];
        while let Some((id, reason)) = gone.pop() {
            if self.links.remove(&id).is_none() {
                continue;
            }
            let (left, pairings) = self.queue.remove(id, Instant::now().into_std());
            let stuck = self.after_unpair(id, left, pairings, reason);
            gone.extend(stuck.into_iter().map(|s| (s, LeaveReason::Disconnected)));
        }
    }

    /// Tells both sides of each pairing. Returns sessions that could not be told.
    fn announce(&mut self, pairings: Vec<Pairing>) -> Vec<SessionId> {
        let mut stuck = Vec::new();
        for p in pairings {
            self.metrics.matches_made.fetch_add(1, Relaxed);
            let (Some(a), Some(b)) = (self.links.get(&p.a).cloned(), self.links.get(&p.b).cloned())
            else {
                continue;
            };
            // Each side's key registered ahead goes to the other in `Matched`, used up here
            // (in the engine's one task) so that a key serves exactly one pairing.
            let (key_a, key_b) = (a.take_next_key(), b.take_next_key());
            for (me, partner, own_key, partner_key) in
                [(&a, b.clone(), key_a, key_b), (&b, a.clone(), key_b, key_a)]
            {
                let event = SessionEvent::Paired {
                    match_id: p.match_id,
                    partner,
                    shared_interests: p.shared_interests.clone(),
                    partner_key,
                    own_key,
                };
                stuck.extend(self.tell(me.id, event));
            }
        }
        stuck
    }

    fn tell_if_waiting(&mut self, id: SessionId) -> Option<SessionId> {
        if self.queue.is_waiting(id) {
            let waiting = u32::try_from(self.queue.waiting()).unwrap_or(u32::MAX);
            return self.tell(id, SessionEvent::Queued { waiting });
        }
        None
    }

    /// Queues an event for a session without waiting. A full or closed queue means the
    /// session cannot keep up: it is told to end (`Peer::evict`, so it neither parks nor
    /// runs on unheard) and returned so the caller removes it and frees its partner.
    fn tell(&mut self, id: SessionId, event: SessionEvent) -> Option<SessionId> {
        let peer = self.links.get(&id)?;
        match peer.events.try_send(event) {
            Ok(()) => None,
            Err(_) => {
                tracing::warn!(
                    session = id,
                    "session event queue full or closed; evicting it"
                );
                self.metrics.evictions.fetch_add(1, Relaxed);
                peer.evict();
                Some(id)
            }
        }
    }
}

fn cooling_off(until: std::time::Instant, now: std::time::Instant) -> crate::session::state::Fatal {
    let minutes = until.saturating_duration_since(now).as_secs().div_ceil(60);
    crate::session::state::Fatal::new(
        duet_proto::ErrorCode::CoolingOff,
        format!(
            "Several people reported you recently. You can meet people again in {minutes} minutes."
        ),
    )
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
