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
}

impl<H: Handler> Announce<H> {
    pub fn new(inner: H, worker: Option<String>) -> Announce<H> {
        Announce {
            inner,
            worker,
            listener: None,
        }
    }

    pub fn with_listener(mut self, listener: mpsc::UnboundedSender<StageProgress>) -> Announce<H> {
        self.listener = Some(listener);
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
        let mut out = self.inner.handle(input).await;
        let progress = StageProgress {
            repair_id,
            stage: self.inner.stage(),
            summary: summary(&out),
            elapsed_ms: started.elapsed().as_millis() as u64,
            at_ms: vocab::now_ms(),
            worker: self.worker.clone(),
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
