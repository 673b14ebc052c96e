//! Resume tokens: the registry that hands a new connection to the session it names.
//!
//! Each live session has one single-use token; a `Hello` carrying it takes the token out
//! of the registry in one step under the lock, so of two resumes at once with one token
//! exactly one gets the session and the other is refused with `bad_resume_token`. The map
//! is bounded by the session limit (one token per admitted session, removed when used or
//! when the session ends).

use super::handshake::Handoff;
use super::state::Fatal;
use super::Shared;
use duet_proto::{ErrorCode, ResumeToken};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Where a session waits for a connection that resumes it. Capacity 1: a second handoff
/// while one is pending is refused (the client already has a connection on its way).
pub type HandoffSender = mpsc::Sender<Box<Handoff>>;

#[derive(Default)]
pub struct ResumeTokens {
    live: Mutex<HashMap<ResumeToken, HandoffSender>>,
}

impl ResumeTokens {
    /// Issues a fresh token for the session listening on `to`.
    pub fn issue(&self, to: HandoffSender) -> ResumeToken {
        let token = ResumeToken(rand::random());
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, to);
        token
    }

    pub fn forget(&self, token: ResumeToken) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
    }

    /// Takes the token: only the first caller gets the session.
    pub fn take(&self, token: ResumeToken) -> Option<HandoffSender> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token)
    }

    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A `Hello` with a resume token: hand this connection to the session it names, or
/// refuse it.
pub async fn hand_over(shared: &Shared, token: ResumeToken, handoff: Handoff) {
    let refused = match shared.resumes.take(token) {
        Some(tx) => match tx.try_send(Box::new(handoff)) {
            Ok(()) => {
                shared
                    .metrics
                    .resumes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            Err(e) => *e.into_inner(),
        },
        None => handoff,
    };
    let fatal = Fatal::new(
        ErrorCode::BadResumeToken,
        "This call can no longer be resumed (it ended, the wait for you ran out, or the link was already used). Start again to meet someone.",
    );
    refused.refuse(&fatal, &shared.metrics).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_once() {
        let tokens = ResumeTokens::default();
        let (tx, _rx) = mpsc::channel(1);
        let token = tokens.issue(tx);
        assert!(tokens.take(token).is_some());
        assert!(tokens.take(token).is_none(), "the second resume is refused");
        assert!(tokens.is_empty());
    }

    #[test]
    fn two_resumes_at_once_one_wins() {
        let tokens = std::sync::Arc::new(ResumeTokens::default());
        let (tx, _rx) = mpsc::channel(1);
        let token = tokens.issue(tx);
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| usize::from(tokens.take(token).is_some())))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(winners, 1);
    }
}
