//! The one progress wrapper of both modes: what a stage did, announced as a [`StageProgress`].

use proto::Message;
use proto::messages::StageProgress;
use tokio::sync::mpsc;

use crate::runtime::{Handler, Input, Outcome};

/// Wraps a stage's handler. Every published result is followed on the bus by a
/// [`StageProgress`] event (what `coval watch` and `coval repair --nats` show, and how the
/// ledger's owner tells a repair in flight); a listener in the same process (the embedded
/// command line) hears of every outcome, including those that publish nothing.
pub struct Announce<H> {
    inner: H,
    /// `host/pid` of a worker process; none in the embedded mode.
    worker: Option<String>,
    listener: Option<mpsc::UnboundedSender<StageProgress>>,
    /// Where the handler's [`interim`] reports go (none: nowhere).
    interim: Option<mpsc::UnboundedSender<StageProgress>>,
}

/// The least time between two interim reports of one handling (the last one of a handling is
/// the stage's own event, which always comes).
pub const INTERIM_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// What a handler running under [`Announce`] reports through [`interim`].
struct Reporter {
    tx: mpsc::UnboundedSender<StageProgress>,
    repair_id: proto::RepairId,
    stage: proto::Stage,
    worker: Option<String>,
    started: std::time::Instant,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

tokio::task_local! {
    static REPORTER: Reporter;
}

/// Tells whoever follows the repair how far the running handler is (`done` of `of`, and one
/// line); at most one report per [`INTERIM_EVERY`] goes out, the rest are dropped. Outside
/// [`Announce`] (a handler's unit test) it does nothing.
pub fn interim(done: u32, of: u32, summary: impl FnOnce() -> String) {
    let _ = REPORTER.try_with(|r| {
        let now = std::time::Instant::now();
        let mut last = r.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < INTERIM_EVERY) {
            return;
        }
        *last = Some(now);
        let _ = r.tx.send(StageProgress {
            repair_id: r.repair_id,
            stage: r.stage,
            summary: summary(),
            elapsed_ms: r.started.elapsed().as_millis() as u64,
            at_ms: vocab::now_ms(),
            worker: r.worker.clone(),
            interim: Some((done, of)),
        });
    });
}

impl<H: Handler> Announce<H> {
    pub fn new(inner: H, worker: Option<String>) -> Announce<H> {
        Announce {
            inner,
            worker,
            listener: None,
            interim: None,
        }
    }

    /// A listener in this process: hears every outcome, and the handler's interim reports.
    pub fn with_listener(mut self, listener: mpsc::UnboundedSender<StageProgress>) -> Announce<H> {
        self.interim = Some(listener.clone());
        self.listener = Some(listener);
        self
    }

    /// Where the handler's interim reports go (a worker publishes them as events).
    pub fn with_interim(mut self, interim: mpsc::UnboundedSender<StageProgress>) -> Announce<H> {
        self.interim = Some(interim);
        self
    }
}

/// One line of what an outcome means: the published messages, or why nothing was.
pub fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Publish(ms) => ms
            .iter()
            .map(proto::summary::describe)
            .collect::<Vec<_>>()
            .join("; "),
        Outcome::Skip(r) => format!("skipped: {r}"),
        Outcome::Retry { reason, .. } => format!("will retry: {reason}"),
        Outcome::Reject(r) => format!("refused: {r}"),
    }
}

impl<H: Handler> Handler for Announce<H> {
    fn stage(&self) -> proto::Stage {
        self.inner.stage()
    }

    async fn handle(&self, input: Input) -> Outcome {
        let started = std::time::Instant::now();
        let repair_id = input.envelope.repair_id;
        let mut out = match &self.interim {
            Some(tx) => {
                let reporter = Reporter {
                    tx: tx.clone(),
                    repair_id,
                    stage: self.inner.stage(),
                    worker: self.worker.clone(),
                    started,
                    last: std::sync::Mutex::new(None),
                };
                REPORTER.scope(reporter, self.inner.handle(input)).await
            }
            None => self.inner.handle(input).await,
        };
        let progress = StageProgress {
            repair_id,
            stage: self.inner.stage(),
            summary: summary(&out),
            elapsed_ms: started.elapsed().as_millis() as u64,
            at_ms: vocab::now_ms(),
            worker: self.worker.clone(),
            interim: None,
        };
        if let Some(l) = &self.listener {
            let _ = l.send(progress.clone());
        }
        if let Outcome::Publish(ms) = &mut out {
            ms.push(Message::StageProgress(progress));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Reports twice at once and once more later, then finishes.
    struct Reporting;

    impl Handler for Reporting {
        fn stage(&self) -> proto::Stage {
            proto::Stage::Validate
        }
        async fn handle(&self, _: Input) -> Outcome {
            interim(1, 3, || "1 of 3".into());
            interim(2, 3, || "2 of 3".into());
            tokio::time::sleep(INTERIM_EVERY).await;
            interim(3, 3, || "3 of 3".into());
            Outcome::Skip("done".into())
        }
    }

    #[tokio::test]
    async fn interim_reports_reach_the_listener_at_most_one_per_interval_before_the_outcome() {
        // Outside `Announce`: nothing, no panic.
        interim(1, 1, || {
            unreachable!("not asked for a summary outside Announce")
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let a = Announce::new(Reporting, Some("h/1".into())).with_listener(tx);
        a.handle(input()).await;
        let mut heard = vec![];
        while let Ok(p) = rx.try_recv() {
            heard.push((p.interim, p.summary, p.worker));
        }
        let w = Some("h/1".to_owned());
        assert_eq!(
            heard,
            [
                (Some((1, 3)), "1 of 3".to_owned(), w.clone()),
                (Some((3, 3)), "3 of 3".to_owned(), w.clone()),
                (None, "skipped: done".to_owned(), w),
            ]
        );
    }

    #[test]
    fn an_outcome_that_publishes_nothing_says_why() {
        assert_eq!(summary(&Outcome::Skip("done".into())), "skipped: done");
        assert_eq!(
            summary(&Outcome::Retry {
                after: Some(Duration::from_secs(1)),
                reason: "busy".into()
            }),
            "will retry: busy"
        );
        assert_eq!(summary(&Outcome::Reject("bad".into())), "refused: bad");
        assert_eq!(summary(&Outcome::Publish(vec![])), "");
    }

    /// Answers every input with the outcome it was made with.
    struct Fixed(Outcome);

    impl Handler for Fixed {
        fn stage(&self) -> proto::Stage {
            proto::Stage::Fix
        }
        async fn handle(&self, _: Input) -> Outcome {
            self.0.clone()
        }
    }

    fn input() -> Input {
        let repair = proto::RepairId::new();
        Input {
            envelope: proto::Envelope::origin(proto::Kind::RepairRequested, repair),
            message: std::sync::Arc::new(Message::StageProgress(StageProgress {
                repair_id: repair,
                stage: proto::Stage::Triage,
                summary: String::new(),
                elapsed_ms: 0,
                at_ms: 0,
                worker: None,
                interim: None,
            })),
            delivered: 1,
        }
    }

    #[tokio::test]
    async fn a_published_result_is_followed_by_its_progress_and_the_listener_hears_everything() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let published = Announce::new(Fixed(Outcome::Publish(vec![])), Some("h/1".into()))
            .with_listener(tx.clone());
        let i = input();
        let Outcome::Publish(ms) = published.handle(i.clone()).await else {
            panic!("not published");
        };
        let [Message::StageProgress(p)] = ms.as_slice() else {
            panic!("{ms:?}");
        };
        assert_eq!(p.repair_id, i.envelope.repair_id);
        assert_eq!(
            (p.stage, p.worker.as_deref()),
            (proto::Stage::Fix, Some("h/1"))
        );
        assert_eq!(rx.recv().await.as_ref(), Some(p));

        let skipped = Announce::new(Fixed(Outcome::Skip("seen".into())), None).with_listener(tx);
        assert!(matches!(skipped.handle(input()).await, Outcome::Skip(_)));
        let heard = rx.recv().await.unwrap();
        assert_eq!(
            (heard.summary.as_str(), heard.worker),
            ("skipped: seen", None)
        );
    }
}
