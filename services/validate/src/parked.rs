//! Sandbox sessions kept from one attempt of a repair for its next one, and those opened ahead
//! of a repair's first attempt.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox::Session;

use crate::lanes::close_later;

/// How long a failed attempt's sessions wait for the repair's next attempt (which may go to
/// another worker, or never come) before they are closed.
const PARK_TTL: Duration = Duration::from_secs(60);

/// How long an attempt waits for sessions being opened ahead of time before opening its own.
pub const PREWARM_WAIT: Duration = Duration::from_secs(30);

/// Sandbox sessions (containers, local servers) kept between one attempt of a repair and the
/// next, so a retry does not pay for new containers and warm servers. Each parking is closed
/// by a timer after [`PARK_TTL`] unless the next attempt took it first; whatever is still
/// parked when the stage is dropped is removed by the sessions' own drop guards.
#[derive(Clone)]
pub struct Parked {
    inner: Arc<Mutex<ParkedInner>>,
    ttl: Duration,
}

impl Default for Parked {
    fn default() -> Self {
        Parked::with_ttl(PARK_TTL)
    }
}

#[derive(Default)]
struct ParkedInner {
    next_ticket: u64,
    /// key → (ticket, sessions)
    by_key: HashMap<String, (u64, Vec<Session>)>,
    /// Keys whose sessions are being opened ahead of time
    /// ([`crate::handler::ValidateStage::prewarm`]): the receiver turns true (or its sender
    /// drops) when that is over.
    pending: HashMap<String, tokio::sync::watch::Receiver<bool>>,
}

/// The key sessions are parked under: one repair, one language, one project dir.
pub fn park_key(repair: &proto::RepairId, language: vocab::Language, root: &Path) -> String {
    format!("{repair}|{language:?}|{}", root.display())
}

impl Parked {
    pub fn with_ttl(ttl: Duration) -> Parked {
        Parked {
            inner: Default::default(),
            ttl,
        }
    }

    /// Sessions parked now, over every key.
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_key.values().map(|(_, s)| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn take(&self, key: &str) -> Vec<Session> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_key.remove(key).map(|(_, s)| s).unwrap_or_default()
    }

    /// [`Parked::take`], after waiting (at most `wait`) for sessions still being opened ahead
    /// of time for this key.
    pub(crate) async fn take_when_ready(&self, key: &str, wait: Duration) -> Vec<Session> {
        let pending = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.pending.get(key).cloned()
        };
        if let Some(mut rx) = pending {
            let _ = tokio::time::timeout(wait, rx.wait_for(|done| *done)).await;
        }
        self.take(key)
    }

    /// Marks `key` as being opened ahead of time; [`Parked::take_when_ready`] waits until the
    /// returned sender says true or is dropped.
    pub(crate) fn begin_pending(&self, key: &str) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.pending.insert(key.to_owned(), rx);
        tx
    }

    pub(crate) fn end_pending(&self, key: &str, tx: tokio::sync::watch::Sender<bool>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.pending.remove(key);
        let _ = tx.send(true);
    }

    pub(crate) fn park(&self, key: String, sessions: Vec<Session>) {
        let ticket = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.next_ticket += 1;
            let ticket = g.next_ticket;
            if let Some((_, old)) = g.by_key.insert(key.clone(), (ticket, sessions)) {
                close_later(old);
            }
            ticket
        };
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.ttl).await;
            let expired = {
                let mut g = me.inner.lock().unwrap_or_else(|p| p.into_inner());
                match g.by_key.get(&key) {
                    Some((t, _)) if *t == ticket => g.by_key.remove(&key).map(|(_, s)| s),
                    _ => None,
                }
            };
            if let Some(sessions) = expired {
                tracing::debug!(key = %key, "parked validation sessions expired");
                futures::future::join_all(sessions.into_iter().map(Session::close)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use sandbox::{RunSpec, Sandbox};

    use super::*;

    #[tokio::test]
    async fn parked_sessions_go_to_the_next_attempt_or_expire() {
        let sandbox = sandbox::LocalSandbox::new();
        let dir = tempfile::tempdir().unwrap();
        let template = RunSpec::new(dir.path(), vec!["true".into()]);
        let open = || async { Sandbox::open_session(&sandbox, &template).await.unwrap() };
        let parked = Parked::with_ttl(Duration::from_millis(300));
        parked.park("rep_a".into(), vec![open().await, open().await]);
        assert_eq!(parked.len(), 2);
        // The next attempt of the same repair takes them; another repair finds none.
        assert!(parked.take("rep_b").is_empty());
        let mut again = parked.take("rep_a");
        assert_eq!(again.len(), 2);
        assert!(parked.is_empty());
        // A session taken back still runs candidates.
        let run = again[0]
            .run(dir.path(), &["true".into()], Duration::from_secs(10))
            .await
            .unwrap();
        assert!(run.success(), "{run:?}");
        // Parked again and never taken: closed when the time is up, not before.
        parked.park("rep_a".into(), again);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(parked.len(), 2);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(parked.is_empty());
        // Parking over an earlier parking of the same key closes the earlier sessions, and the
        // earlier timer does not take the later ones.
        parked.park("rep_c".into(), vec![open().await]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        parked.park("rep_c".into(), vec![open().await]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(parked.len(), 1, "the first timer took the second parking");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(parked.is_empty());
    }
}
