//! Wire tests: every message round-trips, and the committed snapshots of every released
//! version still decode. `COVAL_BLESS=1 cargo test -p proto` writes snapshots that are
//! missing; it never rewrites an existing one (a released version is frozen).

use std::path::PathBuf;

use super::*;
use crate::{MessageId, RepairId};

fn request() -> RepairRequested {
    RepairRequested {
        repair_id: "rep_01JDQ7Z8W6Y9S7B2C4D5E6F7G8".parse().unwrap(),
        project: ProjectRef::ObjectStore {
            bucket: "coval-snapshots".into(),
            key: "rep_01JDQ7Z8W6Y9S7B2C4D5E6F7G8.tar".into(),
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            size: 20480,
        },
        error_log: "Traceback (most recent call last):\n  File \"app/calc.py\", line 3, in mean\n    return sum(xs) / len(xs) - 1\nZeroDivisionError: division by zero\n".into(),
        test_cmd: Some("pytest -q".into()),
        iteration: Some(IterationId(3)),
        engine: EngineChoice::Search,
        model: Some("qwen".into()),
        max_attempts: 5,
        analyze_only: false,
        requested_at_ms: 1_764_000_000_000,
        no_rebuild: false,
        origin: None,
    }
}

fn triage() -> TriageReport {
    TriageReport {
        language: Language::Python,
        error_type: "ZeroDivisionError".into(),
        message: "division by zero".into(),
        category: Category::Runtime,
        frames: vec![Frame {
            file: "app/calc.py".into(),
            line: Some(3),
            column: None,
            function: Some("mean".into()),
            in_project: true,
            // None and false, as in the committed snapshots written before these fields.
            resolved: None,
            test: false,
        }],
        failing_tests: vec!["tests/test_calc.py::test_mean".into()],
        suspects: vec![Suspect {
            file: "app/calc.py".into(),
            line: Some(3),
            score: 0.9,
            reason: "innermost project frame".into(),
        }],
        metrics: Metrics {
            debt: 0.1,
            coverage: 0.8,
            coverage_measured: true,
            context: 0.9,
            capability: 0.75,
            loc: 120,
            region_lines: 0,
            module_lines: 0,
        },
        notes: vec![],
        model: None,
        innermost: None,
    }
}

fn decision() -> Decision {
    Decision {
        verdict: Verdict::Repair,
        c_fix: 0.42,
        c_new: 3.0,
        p_success: 0.81,
        reasons: vec!["small tested project with a precise trace".into()],
        features: vec![],
        overruled: None,
    }
}

fn mre() -> MreSummary {
    MreSummary {
        reproduced: true,
        whole_project: false,
        files: vec!["app/calc.py".into(), "tests/test_calc.py".into()],
        test_cmd: "pytest -q".into(),
        failing_tests: vec!["tests/test_calc.py::test_mean".into()],
        passing_tests: vec!["tests/test_calc.py::test_sum".into()],
        sandbox: "docker".into(),
        notes: vec![],
        baseline_ms: 0,
        baseline_timed_out: false,
        blocked: None,
        wider: vec![],
        candidate_cmd: None,
        suite_blocked: None,
    }
}

fn attempt() -> AttemptRecord {
    AttemptRecord {
        attempt: 1,
        engine: Engine::Search,
        candidates: vec![Candidate {
            id: "c1".into(),
            source: CandidateSource::Search {
                operator: "delete-constant".into(),
            },
            description: "remove `- 1`".into(),
            diff: "--- a/app/calc.py\n+++ b/app/calc.py\n@@ -3 +3 @@\n-    return sum(xs) / len(xs) - 1\n+    return sum(xs) / len(xs)\n".into(),
            edit_tokens: None,
            at_suspect: false,
        }],
        results: vec![CandidateResult {
            candidate_id: "c1".into(),
            passed: true,
            tests: vec![TestOutcome {
                name: "tests/test_calc.py::test_mean".into(),
                status: TestStatus::Passed,
            }],
            regressions: vec![],
            changed_lines: 1,
            reason: None,
            duration_ms: 180,
            path: String::new(),
        }],
        usage: Usage::default(),
        // Zero, as in the committed snapshots written before these fields existed.
        validation_ms: 0,
        lanes: 0,
        paths: RunPaths::default(),
    }
}

/// One sample of every kind in its current version; each is also what its committed snapshot
/// of every older version upgrades to (version 1 wrote the search engine as `search`).
fn samples() -> Vec<Message> {
    let rq = request();
    vec![
        Message::RepairRequested(rq.clone()),
        Message::Triaged(Triaged {
            request: rq.clone(),
            report: triage(),
        }),
        Message::Decided(Decided {
            request: rq.clone(),
            triage: triage(),
            decision: decision(),
        }),
        Message::MreReady(MreReady {
            request: rq.clone(),
            triage: triage(),
            decision: decision(),
            mre: mre(),
        }),
        Message::FixProposed(FixProposed {
            request: rq.clone(),
            triage: triage(),
            decision: decision(),
            mre: mre(),
            attempt: 1,
            engine: Engine::Search,
            candidates: attempt().candidates,
            usage: Usage {
                prompt_tokens: 1200,
                completion_tokens: 80,
                duration_ms: 900,
            },
            history: vec![],
        }),
        Message::ValidationFailed(ValidationFailed {
            request: rq.clone(),
            triage: triage(),
            decision: decision(),
            mre: mre(),
            attempt: 1,
            attempts_left: 4,
            history: vec![attempt()],
            feedback: "FAILED tests/test_calc.py::test_mean - assert 1.0 == 2.0".into(),
        }),
        Message::ValidationPassed(ValidationPassed {
            request: rq.clone(),
            triage: triage(),
            decision: decision(),
            mre: mre(),
            attempt: 1,
            history: vec![attempt()],
            winner: attempt().results[0].clone(),
            patch: attempt().candidates[0].diff.clone(),
            why: String::new(),
        }),
        Message::RepairCompleted(RepairCompleted {
            repair_id: rq.repair_id,
            outcome: RepairOutcome::Fixed,
            summary: "fixed app/calc.py:3".into(),
            new_iteration: Some(IterationId(4)),
            report_dir: Some("repairs/repair-rep_01JDQ7Z8W6Y9S7B2C4D5E6F7G8".into()),
            completed_at_ms: 1_764_000_005_000,
            report: None,
            blocked: None,
        }),
        Message::DeadLetter(DeadLetter {
            repair_id: rq.repair_id,
            stage: Stage::Validate,
            message_id: Some(
                "msg_01JDQ7Z8W6Y9S7B2C4D5E6F7G9"
                    .parse::<MessageId>()
                    .unwrap(),
            ),
            original_kind: Some("fix_proposed".into()),
            original_subject: "coval.stage.validate.fix_proposed".into(),
            reason: "max deliveries (5) reached: sandbox unavailable".into(),
            deliveries: 5,
            headers: vec![("Coval-Type".into(), "fix_proposed".into())],
            body: vec![0x81, 0xa1, 0x61, 0x01],
            dead_at_ms: 1_764_000_009_000,
        }),
        Message::StageProgress(StageProgress {
            repair_id: rq.repair_id,
            stage: Stage::Fix,
            summary: "attempt 1: 12 candidates from search".into(),
            elapsed_ms: 840,
            at_ms: 1_764_000_004_000,
            worker: Some("ci-runner-3/4242".into()),
            interim: None,
        }),
    ]
}

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("snapshots")
}

#[test]
fn every_kind_has_a_sample() {
    let kinds: Vec<Kind> = samples().iter().map(Message::kind).collect();
    assert_eq!(kinds, Kind::ALL.to_vec());
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let body = m.encode().unwrap();
        let back = Message::decode(m.kind().as_str(), m.kind().current_version(), &body).unwrap();
        assert_eq!(back, m);
    }
}

#[test]
fn committed_snapshots_still_decode() {
    let bless = std::env::var_os("COVAL_BLESS").is_some();
    for m in samples() {
        for &v in m.kind().supported_versions() {
            let path = snapshot_dir()
                .join(format!("v{v}"))
                .join(format!("{}.msgpack", m.kind()));
            if !path.exists() && bless && v == m.kind().current_version() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, m.encode().unwrap()).unwrap();
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "snapshot {} missing ({e}); run with COVAL_BLESS=1",
                    path.display()
                )
            });
            let decoded = Message::decode(m.kind().as_str(), v, &bytes)
                .unwrap_or_else(|e| panic!("snapshot {} no longer decodes: {e}", path.display()));
            // An old version upgrades to the current sample: the upgrade loses nothing.
            assert_eq!(
                decoded,
                m,
                "snapshot {} decodes to something else",
                path.display()
            );
        }
    }
}

#[test]
fn frames_with_resolution_round_trip() {
    let mut report = triage();
    let f = Frame {
        file: r"C:\Users\dev\shop\app\calc.py".into(),
        line: Some(3),
        in_project: true,
        resolved: Some("app/calc.py".into()),
        test: false,
        ..Frame::default()
    };
    report.innermost = Some(f.clone());
    report.frames = vec![
        f.clone(),
        Frame {
            file: "tests/test_calc.py".into(),
            in_project: true,
            test: true,
            ..Frame::default()
        },
    ];
    let m = Message::Triaged(Triaged {
        request: request(),
        report,
    });
    let back = Message::decode("triaged", 1, &m.encode().unwrap()).unwrap();
    assert_eq!(back, m);
    assert_eq!(f.kind(), FrameKind::Project);
    assert_eq!(f.place(), "app/calc.py:3");
    let Message::Triaged(t) = back else { panic!() };
    assert_eq!(t.report.frames[1].kind(), FrameKind::Test);
    assert_eq!(Frame::default().kind(), FrameKind::External);
}

#[test]
fn unknown_or_malformed_input_is_a_typed_error() {
    let body = samples()[0].encode().unwrap();
    assert!(
        matches!(Message::decode("no_such_kind", 1, &body), Err(DecodeError::UnknownKind(k)) if k == "no_such_kind")
    );
    assert!(matches!(
        Message::decode("triaged", 99, &body),
        Err(DecodeError::UnsupportedVersion { version: 99, .. })
    ));
    // A repair request's body read as another kind, truncated bodies, garbage: errors.
    assert!(matches!(
        Message::decode("triaged", 1, &body),
        Err(DecodeError::Malformed { .. })
    ));
    for cut in [0, 1, body.len() / 2, body.len() - 1] {
        assert!(Message::decode("repair_requested", 1, &body[..cut]).is_err());
    }
    assert!(Message::decode("repair_requested", 1, &[0xc1, 0xff, 0x00]).is_err());
}

#[test]
fn additive_optional_fields_keep_old_bodies_readable() {
    // A v1 request written before `analyze_only`, `engine` and `model` existed: a map without them.
    #[derive(serde::Serialize)]
    struct Old<'a> {
        repair_id: RepairId,
        project: &'a ProjectRef,
        error_log: &'a str,
        max_attempts: u32,
        requested_at_ms: u64,
    }
    let rq = request();
    let old = rmp_serde::to_vec_named(&Old {
        repair_id: rq.repair_id,
        project: &rq.project,
        error_log: &rq.error_log,
        max_attempts: 3,
        requested_at_ms: 1,
    })
    .unwrap();
    let Message::RepairRequested(m) = Message::decode("repair_requested", 1, &old).unwrap() else {
        panic!("wrong kind");
    };
    assert_eq!(m.engine, EngineChoice::Auto);
    assert!(!m.analyze_only);
    assert_eq!(m.model, None);
}

#[test]
fn the_candidate_command_is_an_additive_field() {
    // An MRE summary from before `candidate_cmd` (the committed snapshots are such bodies
    // too): a map without it decodes, as the request's command.
    #[derive(serde::Serialize)]
    struct Old<'a> {
        reproduced: bool,
        whole_project: bool,
        files: &'a [String],
        test_cmd: &'a str,
        failing_tests: &'a [String],
        sandbox: &'a str,
        notes: &'a [String],
        wider: &'a [Vec<String>],
    }
    let m = mre();
    let old = rmp_serde::to_vec_named(&Old {
        reproduced: true,
        whole_project: true,
        files: &m.files,
        test_cmd: &m.test_cmd,
        failing_tests: &m.failing_tests,
        sandbox: &m.sandbox,
        notes: &m.notes,
        wider: &[],
    })
    .unwrap();
    let back: MreSummary = rmp_serde::from_slice(&old).unwrap();
    assert_eq!(back.candidate_cmd, None);
    assert_eq!(back.suite_blocked, None);
    assert_eq!(back.test_cmd, m.test_cmd);

    // A summary with it round-trips in its message, and a reader from before it still reads
    // the rest (MessagePack maps: an unknown key is skipped).
    let argv = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let new = MreSummary {
        candidate_cmd: Some(argv(&[
            "python",
            "-m",
            "pytest",
            "tests/test_calc.py::test_mean",
        ])),
        wider: vec![argv(&["python", "-m", "pytest", "tests/test_calc.py"])],
        suite_blocked: Some(Blocked {
            reason: BlockedReason::Dependency,
            what: "the Python package `aiohttp`".into(),
            hint: "`python3 -m pip install aiohttp`".into(),
            output_tail: String::new(),
        }),
        ..mre()
    };
    let msg = Message::MreReady(MreReady {
        request: request(),
        triage: triage(),
        decision: decision(),
        mre: new.clone(),
    });
    let body = msg.encode().unwrap();
    let Message::MreReady(r) = Message::decode("mre_ready", 1, &body).unwrap() else {
        panic!("wrong kind");
    };
    assert_eq!(r.mre, new);
    #[derive(serde::Deserialize)]
    struct OldReader {
        test_cmd: String,
        wider: Vec<Vec<String>>,
    }
    let old_reader: OldReader =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&new).unwrap()).unwrap();
    assert_eq!(old_reader.test_cmd, new.test_cmd);
    assert_eq!(old_reader.wider, new.wider);
}

#[test]
fn routing_follows_the_workflow() {
    let s = samples();
    let stage = |i: usize| s[i].route();
    assert_eq!(stage(0), Some(Stage::Triage));
    assert_eq!(stage(1), Some(Stage::Decision));
    assert_eq!(stage(2), Some(Stage::Mre));
    assert_eq!(stage(3), Some(Stage::Fix));
    assert_eq!(stage(4), Some(Stage::Validate));
    assert_eq!(stage(5), Some(Stage::Fix));
    assert_eq!(stage(6), Some(Stage::Integrate));
    assert_eq!(stage(7), None);
    let Message::Decided(mut d) = s[2].clone() else {
        unreachable!()
    };
    d.decision.verdict = Verdict::Rebuild;
    assert_eq!(Message::Decided(d.clone()).route(), Some(Stage::Integrate));
    d.decision.verdict = Verdict::Repair;
    d.request.analyze_only = true;
    assert_eq!(Message::Decided(d).route(), Some(Stage::Integrate));
    let Message::ValidationFailed(mut f) = s[5].clone() else {
        unreachable!()
    };
    f.attempts_left = 0;
    assert_eq!(Message::ValidationFailed(f).route(), Some(Stage::Integrate));
}

#[test]
fn version_1_engine_strings_upgrade_to_engines() {
    let path = snapshot_dir().join("v1").join("fix_proposed.msgpack");
    let mut old: v1::FixProposed = rmp_serde::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(old.engine, "search");
    // Version 1 wrote the model's alias for a model, whatever the alias: never an error.
    for (written, upgraded) in [
        ("search", Engine::Search),
        (
            "qwen",
            Engine::Model {
                name: "qwen".into(),
            },
        ),
        ("", Engine::Model { name: "".into() }),
    ] {
        old.engine = written.into();
        old.history = vec![v1::AttemptRecord {
            attempt: 0,
            engine: written.into(),
            candidates: vec![],
            results: vec![],
            usage: Usage::default(),
            validation_ms: 0,
            lanes: 0,
        }];
        let body = rmp_serde::to_vec_named(&old).unwrap();
        let Message::FixProposed(f) = Message::decode("fix_proposed", 1, &body).unwrap() else {
            panic!("wrong kind");
        };
        assert_eq!(f.engine, upgraded);
        assert_eq!(f.history[0].engine, upgraded);
        assert_eq!(f.engine.to_string(), written, "shown as version 1 wrote it");
    }
}

#[test]
fn a_model_engine_round_trips() {
    let Message::FixProposed(mut f) = samples()[4].clone() else {
        unreachable!()
    };
    f.engine = Engine::Model {
        name: "qwen".into(),
    };
    let m = Message::FixProposed(f);
    let back = Message::decode("fix_proposed", 2, &m.encode().unwrap()).unwrap();
    assert_eq!(back, m);
    // A version-1 reader of a version-2 body fails with an error, not a panic.
    assert!(matches!(
        Message::decode("fix_proposed", 1, &m.encode().unwrap()),
        Err(DecodeError::Malformed { version: 1, .. })
    ));
}

#[test]
fn a_repair_whose_tests_cannot_run_says_why_on_the_wire() {
    let blocked = Blocked {
        reason: BlockedReason::Runner,
        what: "pytest".into(),
        hint: "python3 -m pip install pytest".into(),
        output_tail: "/usr/bin/python3: No module named pytest".into(),
    };
    let mut summary = mre();
    summary.blocked = Some(blocked.clone());
    let ready = Message::MreReady(MreReady {
        request: request(),
        triage: triage(),
        decision: decision(),
        mre: summary,
    });
    // Nothing to fix or validate: the MRE goes straight to integration.
    assert_eq!(ready.route(), Some(Stage::Integrate));
    let done = Message::RepairCompleted(RepairCompleted {
        repair_id: request().repair_id,
        outcome: RepairOutcome::CannotRun,
        summary: "the tests cannot run: pytest is not installed".into(),
        new_iteration: None,
        report_dir: None,
        completed_at_ms: 1,
        report: None,
        blocked: Some(blocked),
    });
    for m in [ready, done] {
        let body = m.encode().unwrap();
        let back = Message::decode(m.kind().as_str(), m.kind().current_version(), &body).unwrap();
        assert_eq!(back, m);
    }
    // A version-1 reader's struct cannot take the new outcome: that is why it is version 3.
    let body = Message::RepairCompleted(RepairCompleted {
        repair_id: request().repair_id,
        outcome: RepairOutcome::CannotRun,
        summary: String::new(),
        new_iteration: None,
        report_dir: None,
        completed_at_ms: 1,
        report: None,
        blocked: None,
    })
    .encode()
    .unwrap();
    assert!(Message::decode("repair_completed", 1, &body).is_err());
}
