//! Subject, stream, consumer and bucket names. Every name comes from here, never from a
//! string literal elsewhere, and all of them hang off a [`Namespace`] so that tests and
//! tenants can share one server without seeing each other's messages.

use crate::{RepairId, Stage};

/// A validated subject prefix: lowercase letters, digits, `-` and `_`, 1 to 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Default for Namespace {
    fn default() -> Self {
        Namespace("coval".into())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid namespace: use 1 to 32 lowercase letters, digits, `-` or `_`")]
pub struct NamespaceError(pub String);

impl Namespace {
    pub fn new(s: &str) -> Result<Namespace, NamespaceError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Namespace(s.to_owned()))
        } else {
            Err(NamespaceError(s.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn upper(&self) -> String {
        self.0.to_ascii_uppercase().replace('-', "_")
    }

    /// Work for `stage`: `<ns>.stage.<stage>.<kind>`.
    pub fn stage_subject(&self, stage: Stage, kind: crate::Kind) -> String {
        format!("{}.stage.{}.{}", self.0, stage.as_str(), kind.as_str())
    }

    /// The filter of `stage`'s consumer; filters of different stages never overlap.
    pub fn stage_filter(&self, stage: Stage) -> String {
        format!("{}.stage.{}.>", self.0, stage.as_str())
    }

    /// Every stage's work: what the single work stream of earlier releases captured.
    pub fn work_subjects(&self) -> String {
        format!("{}.stage.>", self.0)
    }

    /// The work-queue stream holding `stage`'s messages not yet handled (its subjects are
    /// [`stage_filter`](Self::stage_filter)). One stream per stage: the server stores, and
    /// with `sync_interval: always` syncs, each stage's work on its own, in parallel with the
    /// other stages', where one stream for all six made every write wait for the one before.
    pub fn work_stream(&self, stage: Stage) -> String {
        format!(
            "{}_WORK_{}",
            self.upper(),
            stage.as_str().to_ascii_uppercase()
        )
    }

    /// The one work stream of every stage that releases before per-stage streams created
    /// (subjects [`work_subjects`](Self::work_subjects)). A worker that finds it retires it:
    /// its subjects move to [`retired_work_subject`](Self::retired_work_subject), its
    /// messages are still handled, and it is deleted once empty.
    pub fn legacy_work_stream(&self) -> String {
        format!("{}_WORK", self.upper())
    }

    /// Where the retired work stream listens: a subject nothing publishes on.
    pub fn retired_work_subject(&self) -> String {
        format!("{}.retired.work", self.0)
    }

    pub fn dead_letter_subject(&self, stage: Stage) -> String {
        format!("{}.dlq.{}", self.0, stage.as_str())
    }

    pub fn dead_letter_subjects(&self) -> String {
        format!("{}.dlq.>", self.0)
    }

    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.upper())
    }

    /// Progress and completion events of one repair, for `coval watch`.
    pub fn event_subject(&self, repair: &RepairId, kind: crate::Kind) -> String {
        format!("{}.events.{}.{}", self.0, repair, kind.as_str())
    }

    pub fn repair_events(&self, repair: &RepairId) -> String {
        format!("{}.events.{}.>", self.0, repair)
    }

    /// Events of one kind, of every repair (which repairs started, which completed).
    pub fn events_of_kind(&self, kind: crate::Kind) -> String {
        format!("{}.events.*.{}", self.0, kind.as_str())
    }

    /// The repair an event subject is about (`<ns>.events.<repair>.<kind>`).
    pub fn repair_of_event<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(self.0.as_str())?
            .strip_prefix(".events.")?;
        rest.split('.').next().filter(|r| !r.is_empty())
    }

    pub fn event_subjects(&self) -> String {
        format!("{}.events.>", self.0)
    }

    pub fn event_stream(&self) -> String {
        format!("{}_EVENTS", self.upper())
    }

    /// The durable consumer of `stage`.
    pub fn consumer(&self, stage: Stage) -> String {
        stage.as_str().to_owned()
    }

    /// The object-store bucket holding project snapshots.
    pub fn snapshot_bucket(&self) -> String {
        format!("{}-snapshots", self.0)
    }

    /// The object-store bucket where the integration stage leaves each repair's report files
    /// (`repair-<id>/<file>`) for the client that submitted it.
    pub fn report_bucket(&self) -> String {
        format!("{}-reports", self.0)
    }

    /// The key-value bucket recording CI submissions by de-duplication key (`coval submit
    /// --dedup-key`, or the CI run's id), so a retried job does not start a second repair.
    pub fn submission_bucket(&self) -> String {
        format!("{}-submissions", self.0)
    }

    /// Request-reply subject the ledger's owner (the integration worker) answers status on.
    pub fn status_subject(&self) -> String {
        format!("{}.ledger.status", self.0)
    }
}

/// The subject a message is published on: the work subject of the stage it routes to, the
/// dead-letter subject of the stage that gave up on it, or the repair's event subject.
pub fn subject_for(ns: &Namespace, msg: &crate::Message) -> String {
    match msg {
        crate::Message::DeadLetter(d) => ns.dead_letter_subject(d.stage),
        _ => match msg.route() {
            Some(stage) => ns.stage_subject(stage, msg.kind()),
            None => ns.event_subject(&msg.repair_id(), msg.kind()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn names_hang_off_the_namespace() {
        let ns = Namespace::new("t-1").unwrap();
        assert_eq!(
            ns.stage_subject(Stage::Fix, Kind::MreReady),
            "t-1.stage.fix.mre_ready"
        );
        assert_eq!(ns.stage_filter(Stage::Fix), "t-1.stage.fix.>");
        assert_eq!(ns.work_stream(Stage::Fix), "T_1_WORK_FIX");
        assert_eq!(ns.legacy_work_stream(), "T_1_WORK");
        // The retired stream's subject is outside every stage's filter.
        for stage in Stage::WORKERS {
            let filter = ns.stage_filter(stage);
            assert!(
                !ns.retired_work_subject()
                    .starts_with(filter.trim_end_matches('>'))
            );
        }
        assert!(Namespace::new("Bad.Name").is_err());
        assert!(Namespace::new("").is_err());
    }

    #[test]
    fn event_subjects_name_their_repair() {
        let ns = Namespace::new("t-1").unwrap();
        let id = RepairId::new();
        let subject = ns.event_subject(&id, Kind::RepairCompleted);
        assert_eq!(ns.repair_of_event(&subject), Some(id.to_string().as_str()));
        assert_eq!(
            ns.events_of_kind(Kind::StageProgress),
            "t-1.events.*.stage_progress"
        );
        assert_eq!(ns.repair_of_event("t-1.stage.fix.mre_ready"), None);
        assert_eq!(ns.repair_of_event("other.events.rep_1.x"), None);
    }

    #[test]
    fn stage_filters_do_not_overlap() {
        let ns = Namespace::default();
        for a in Stage::WORKERS {
            for b in Stage::WORKERS {
                if a != b {
                    assert!(
                        !ns.stage_subject(a, Kind::Triaged)
                            .starts_with(&ns.stage_filter(b).replace('>', ""))
                    );
                }
            }
        }
    }
}
