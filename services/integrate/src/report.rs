//! repair_report.md and report.json. The JSON schema is documented in docs/report-schema.md.

use std::fmt::Write;

use proto::messages::{
    AttemptRecord, Decision, Frame, MreSummary, RepairOutcome, RepairRequested, TestStatus,
    TriageReport, Verdict,
};

/// Frames listed in the Markdown reports and the text output; JSON lists them all.
pub const FRAMES_SHOWN: usize = 12;

/// One frame for report.json and `--json`: the file as the log wrote it, the project file it
/// resolved to (null when the project does not have it), line, column, function, and whose
/// code it is (`project`, `test`, `external`).
pub fn frame_json(f: &Frame) -> serde_json::Value {
    serde_json::json!({
        "file": f.file,
        "resolved": f.resolved,
        "line": f.line,
        "column": f.column,
        "function": f.function,
        "kind": f.kind().as_str(),
    })
}

/// The triage findings about where the failure is: the innermost project frame and the
/// parsed frames, innermost first.
pub fn frames_json(t: &TriageReport) -> (serde_json::Value, serde_json::Value) {
    (
        t.innermost
            .as_ref()
            .map_or(serde_json::Value::Null, frame_json),
        t.frames.iter().map(frame_json).collect(),
    )
}

/// One line per frame, innermost first, for Markdown (`- ` items) and the text output.
pub fn frame_line(f: &Frame) -> String {
    let mut s = f.place();
    if let Some(c) = f.column {
        s.push_str(&format!(":{c}"));
    }
    if let Some(func) = &f.function {
        s.push_str(&format!(" in {func}"));
    }
    s.push_str(&format!(" ({})", f.kind().as_str()));
    if f.resolved.as_deref().is_some_and(|r| r != f.file) {
        s.push_str(&format!(", written {}", f.file));
    }
    s
}

/// The innermost project frame in words, for the reports' "Where" sections.
pub fn innermost_sentence(t: &TriageReport) -> Option<String> {
    let f = t.innermost.as_ref()?;
    Some(match &f.resolved {
        Some(_) => format!("Innermost project frame: `{}`.", frame_line(f)),
        None => format!(
            "Innermost project frame: `{}`, not found in the source directory (kept as the log wrote it).",
            frame_line(f)
        ),
    })
}

/// Everything a report is made from.
pub struct Facts<'a> {
    pub request: &'a RepairRequested,
    pub triage: &'a TriageReport,
    pub decision: &'a Decision,
    pub mre: Option<&'a MreSummary>,
    pub history: &'a [AttemptRecord],
    pub outcome: RepairOutcome,
    /// The winning candidate's id and the final patch, when fixed.
    pub winner: Option<(&'a str, &'a str)>,
    /// Why the winner ranks first among the passing candidates.
    pub why: &'a str,
    pub new_iteration: Option<String>,
    pub elapsed_ms: u64,
}

pub fn outcome_str(o: RepairOutcome) -> &'static str {
    match o {
        RepairOutcome::Fixed => "fixed",
        RepairOutcome::NoFix => "no_fix",
        RepairOutcome::RebuildRecommended => "rebuild_recommended",
        RepairOutcome::Analyzed => "analyzed",
        RepairOutcome::Failed => "failed",
        RepairOutcome::CannotRun => "cannot_run",
    }
}

fn status(s: TestStatus) -> &'static str {
    match s {
        TestStatus::Passed => "passed",
        TestStatus::Failed => "failed",
        TestStatus::Error => "error",
        TestStatus::Skipped => "skipped",
    }
}

pub fn summary(f: &Facts) -> String {
    match f.outcome {
        RepairOutcome::Fixed => {
            let tried: usize = f.history.iter().map(|a| a.results.len()).sum();
            format!(
                "fixed after {} attempt(s), {tried} candidate(s) validated",
                f.history.len()
            )
        }
        RepairOutcome::NoFix => format!(
            "no candidate passed validation in {} attempt(s)",
            f.history.len()
        ),
        RepairOutcome::RebuildRecommended => {
            "rebuilding is cheaper than repairing: see decision.md".into()
        }
        RepairOutcome::Analyzed => "analysis only".into(),
        RepairOutcome::Failed => "the repair could not run".into(),
        RepairOutcome::CannotRun => match f.mre.and_then(|m| m.blocked.as_ref()) {
            Some(b) => match f.mre.map_or("", |m| m.sandbox.as_str()) {
                "" => b.problem(),
                sandbox => format!("{} in the {sandbox} sandbox", b.problem()),
            },
            None => "the tests cannot run in the sandbox".into(),
        },
    }
}

pub fn markdown(f: &Facts) -> String {
    let t = f.triage;
    let d = f.decision;
    let mut s = String::new();
    let _ = writeln!(s, "# Repair report `{}`\n", f.request.repair_id);
    let _ = writeln!(
        s,
        "**Outcome: {}** — {}.\n",
        outcome_str(f.outcome),
        summary(f)
    );
    if let Some(o) = f.request.origin.as_ref().filter(|o| !o.is_empty()) {
        let _ = writeln!(s, "## Where it failed\n");
        for (name, value) in origin_lines(o) {
            let _ = writeln!(s, "- {name}: {value}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## What failed\n");
    let _ = writeln!(
        s,
        "`{}`: {} (category {}, language {:?}).\n",
        if t.error_type.is_empty() {
            "unnamed error"
        } else {
            &t.error_type
        },
        t.message,
        t.category.as_str(),
        t.language
    );
    if !t.failing_tests.is_empty() {
        let _ = writeln!(
            s,
            "Failing tests named in the log: {}.\n",
            t.failing_tests.join(", ")
        );
    }
    let _ = writeln!(s, "## Where\n");
    if let Some(w) = innermost_sentence(t) {
        let _ = writeln!(s, "{w}\n");
    }
    if t.suspects.is_empty() {
        let _ = writeln!(s, "No project file could be pointed at.\n");
    }
    for x in t.suspects.iter().take(8) {
        let line = x.line.map(|l| format!(":{l}")).unwrap_or_default();
        let _ = writeln!(s, "- `{}{line}` ({:.2}): {}", x.file, x.score, x.reason);
    }
    if !t.frames.is_empty() {
        let _ = writeln!(s, "\nFrames of the trace, innermost first:\n");
        for f in t.frames.iter().take(FRAMES_SHOWN) {
            let _ = writeln!(s, "- `{}`", frame_line(f));
        }
        if t.frames.len() > FRAMES_SHOWN {
            let _ = writeln!(s, "- … {} more", t.frames.len() - FRAMES_SHOWN);
        }
    }
    let _ = writeln!(s, "\n## Decision\n");
    let _ = writeln!(
        s,
        "C_fix = {:.3}, C_new = {:.3}, p(success) = {:.0}%: **{}** (details in decision.md).\n",
        d.c_fix,
        d.c_new,
        d.p_success * 100.0,
        if d.verdict == proto::messages::Verdict::Repair {
            "repair"
        } else {
            "rebuild"
        }
    );
    if let Some(why) = &d.overruled {
        let _ = writeln!(
            s,
            "The cost model disagreed: it recommends a rebuild, but {why}.\n"
        );
    }
    if let Some(m) = f.mre {
        let _ = writeln!(s, "## Reproduction\n");
        let _ = writeln!(
            s,
            "Sandbox `{}`, test command `{}`. The failure {} in the {}.\n",
            m.sandbox,
            m.test_cmd,
            if m.reproduced {
                "reproduced"
            } else {
                "did NOT reproduce"
            },
            if m.whole_project {
                "whole project"
            } else {
                "minimal example (mre/)"
            }
        );
        for n in &m.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }
    if !f.history.is_empty() {
        let _ = writeln!(s, "## Candidates\n");
        for a in f.history {
            let u = &a.usage;
            let _ = writeln!(
                s,
                "### Attempt {} ({}{})\n",
                a.attempt,
                a.engine,
                if u.prompt_tokens + u.completion_tokens > 0 {
                    format!(
                        ", {} prompt + {} completion tokens, {} ms",
                        u.prompt_tokens, u.completion_tokens, u.duration_ms
                    )
                } else {
                    String::new()
                }
            );
            if a.validation_ms > 0 {
                let _ = writeln!(
                    s,
                    "{} candidate(s) validated in {:.1} s on {} lane(s).\n",
                    a.results.len(),
                    a.validation_ms as f64 / 1000.0,
                    a.lanes
                );
            }
            if a.paths.runs > 0 {
                let _ = writeln!(s, "{}\n", run_paths(&a.paths));
            }
            for r in &a.results {
                let what = a
                    .candidates
                    .iter()
                    .find(|c| c.id == r.candidate_id)
                    .map(|c| c.description.as_str())
                    .unwrap_or("");
                let verdict = if r.passed {
                    "passed".to_owned()
                } else {
                    r.reason.clone().unwrap_or_else(|| "failed".into())
                };
                let path = if r.path.is_empty() {
                    String::new()
                } else {
                    format!("; {}", r.path)
                };
                let _ = writeln!(
                    s,
                    "- `{}` {what}: {verdict} ({} ms{path})",
                    r.candidate_id, r.duration_ms
                );
            }
            let _ = writeln!(s);
        }
    }
    if let (Some(m), Some((id, _))) = (f.mre, f.winner) {
        if !f.why.is_empty() {
            let _ = writeln!(s, "## Why this change\n\n`{id}` ranks first: {}.\n", f.why);
        }
        let after = f
            .history
            .iter()
            .flat_map(|a| &a.results)
            .find(|r| r.candidate_id == id);
        let _ = writeln!(s, "## Tests before and after\n");
        let _ = writeln!(s, "| test | before | after |\n| --- | --- | --- |");
        let mut names: Vec<&String> = m.failing_tests.iter().chain(&m.passing_tests).collect();
        names.sort();
        names.dedup();
        for n in names {
            let before = if m.failing_tests.contains(n) {
                "failed"
            } else {
                "passed"
            };
            let now = after
                .and_then(|r| r.tests.iter().find(|o| &o.name == n))
                .map(|o| status(o.status))
                .unwrap_or("not run");
            let _ = writeln!(s, "| `{n}` | {before} | {now} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Regression risk\n");
    let m = &t.metrics;
    let _ = writeln!(
        s,
        "Test coverage T = {:.2} ({}). Passing tests prove only what they check: {}.\n",
        m.coverage,
        if m.coverage_measured {
            "measured"
        } else {
            "estimated, not measured"
        },
        if m.coverage < 0.5 {
            "coverage is low, so review the change by hand before relying on it"
        } else {
            "the change touched code the tests exercise, and no test that passed before fails now"
        }
    );
    if let Some(cmd) = f.mre.and_then(|m| m.candidate_cmd.as_ref()) {
        let mut ran = vec![format!("`{}`", cmd.join(" "))];
        ran.extend(
            f.mre
                .iter()
                .flat_map(|m| &m.wider)
                .map(|w| format!("`{}`", w.join(" "))),
        );
        let why = match f.mre.and_then(|m| m.suite_blocked.as_ref()) {
            Some(b) => format!(
                "it cannot run in the sandbox ({} is missing), so a change may still break a test elsewhere. To validate against the whole suite: {}.",
                b.what, b.hint
            ),
            None => "the whole suite is longer than `sandbox.timeout_secs`, so a change may still break a test elsewhere. Raise `sandbox.timeout_secs` (`COVAL_SANDBOX__TIMEOUT_SECS`) above the suite's time to validate against the whole suite.".into(),
        };
        let _ = writeln!(
            s,
            "Candidates ran {} only. The rest of the suite was NOT run for them: {why}\n",
            ran.join(" then ")
        );
    }
    let _ = writeln!(s, "## Recommendations\n");
    match f.outcome {
        RepairOutcome::Fixed => {
            let _ = writeln!(
                s,
                "- Review `final.patch`, then apply it with `git apply final.patch` (or rerun with `--apply`)."
            );
            let _ = writeln!(
                s,
                "- Add a test for the case that failed if none pins it down exactly."
            );
        }
        RepairOutcome::NoFix => {
            let _ = writeln!(
                s,
                "- Try a model engine (`--engine llm`) or more attempts (`--max-attempts`)."
            );
            let _ = writeln!(
                s,
                "- Check the failing output of the closest candidate in validation/."
            );
        }
        RepairOutcome::RebuildRecommended => {
            let _ = writeln!(
                s,
                "- Rewrite the module: the cost model estimates repair at {:.1}× the rebuild.",
                d.c_fix / d.c_new.max(1e-9)
            );
            let _ = writeln!(
                s,
                "- Add tests first: they are the specification a rebuild is checked against."
            );
        }
        RepairOutcome::CannotRun => {
            if let Some(b) = f.mre.and_then(|m| m.blocked.as_ref()) {
                let _ = writeln!(s, "- Make the tests runnable: {}.", b.hint);
                let _ = writeln!(
                    s,
                    "- The run that showed it ended with:\n\n```text\n{}\n```",
                    b.output_tail
                );
            }
            let _ = writeln!(
                s,
                "- Or give the command that runs your tests where they can run, with `--test-cmd`."
            );
        }
        RepairOutcome::Analyzed | RepairOutcome::Failed => {}
    }
    let _ = writeln!(
        s,
        "\n## Time\n\n{} ms from request to report.",
        f.elapsed_ms
    );
    s
}

/// The origin's known fields, in the words of the report.
fn origin_lines(o: &proto::messages::Origin) -> Vec<(&'static str, String)> {
    [
        ("CI", &o.ci),
        ("repository", &o.repository),
        ("commit", &o.commit),
        ("branch", &o.branch),
        ("job", &o.job_url),
    ]
    .into_iter()
    .filter_map(|(n, v)| {
        v.as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| (n, format!("`{v}`")))
    })
    .collect()
}

pub fn json(f: &Facts) -> serde_json::Value {
    let t = f.triage;
    let m = &t.metrics;
    let (innermost, frames) = frames_json(t);
    serde_json::json!({
        "schema": "coval.report/1",
        "repair_id": f.request.repair_id.to_string(),
        "outcome": outcome_str(f.outcome),
        "summary": summary(f),
        "origin": f.request.origin.as_ref().filter(|o| !o.is_empty()).map(|o| serde_json::json!({
            "ci": o.ci, "repository": o.repository, "commit": o.commit, "branch": o.branch,
            "job_url": o.job_url, "dedup_key": o.dedup_key,
        })),
        "triage": {
            "language": t.language,
            "error_type": t.error_type,
            "message": t.message,
            "category": t.category,
            "failing_tests": t.failing_tests,
            "suspects": t.suspects.iter().map(|x| serde_json::json!({"file": x.file, "line": x.line, "score": x.score, "reason": x.reason})).collect::<Vec<_>>(),
            "innermost_project_frame": innermost,
            "frames": frames,
            "notes": t.notes,
        },
        "metrics": {"D": m.debt, "T": m.coverage, "T_measured": m.coverage_measured, "K": m.context, "S": m.capability, "loc": m.loc, "region_lines": m.region_lines, "module_lines": m.module_lines},
        "decision": {"verdict": f.decision.verdict, "c_fix": f.decision.c_fix, "c_new": f.decision.c_new, "p_success": f.decision.p_success, "reasons": f.decision.reasons, "overruled": f.decision.overruled},
        "mre": f.mre.map(|m| serde_json::json!({"reproduced": m.reproduced, "whole_project": m.whole_project, "files": m.files, "test_cmd": m.test_cmd, "failing_tests": m.failing_tests, "passing_tests": m.passing_tests, "sandbox": m.sandbox, "notes": m.notes, "candidate_cmd": m.candidate_cmd, "suite_blocked": m.suite_blocked.as_ref().map(|b| serde_json::json!({"reason": b.reason, "what": b.what, "hint": b.hint})), "wider": m.wider, "blocked": m.blocked.as_ref().map(|b| serde_json::json!({"reason": b.reason, "what": b.what, "hint": b.hint, "output_tail": b.output_tail}))})),
        "attempts": f.history.iter().map(|a| serde_json::json!({
            "attempt": a.attempt,
            "engine": a.engine.to_string(),
            "usage": {"prompt_tokens": a.usage.prompt_tokens, "completion_tokens": a.usage.completion_tokens, "duration_ms": a.usage.duration_ms},
            "validation_ms": a.validation_ms,
            "lanes": a.lanes,
            "paths": {"runs": a.paths.runs, "warm": a.paths.warm, "collected": a.paths.collected, "fresh": a.paths.runs.saturating_sub(a.paths.warm), "warm_off": a.paths.warm_off},
            "candidates": a.results.iter().map(|r| {
                let c = a.candidates.iter().find(|c| c.id == r.candidate_id);
                serde_json::json!({
                    "id": r.candidate_id,
                    "description": c.map(|c| c.description.clone()),
                    "passed": r.passed,
                    "reason": r.reason,
                    "changed_lines": r.changed_lines,
                    "regressions": r.regressions,
                    "duration_ms": r.duration_ms,
                    "path": r.path,
                    "tests": r.tests.iter().map(|o| serde_json::json!({"name": o.name, "status": o.status})).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "winner": f.winner.map(|(id, _)| id),
        "winner_why": (!f.why.is_empty()).then_some(f.why),
        "patch": f.winner.map(|(_, p)| p),
        "new_iteration": f.new_iteration,
        "elapsed_ms": f.elapsed_ms,
    })
}

/// decision.md: the triage findings and the decision, every number in plain words.
pub fn decision_md(report: &TriageReport, d: &Decision) -> String {
    let mut s = String::new();
    let verdict = match d.verdict {
        Verdict::Repair => "repair",
        Verdict::Rebuild => "rebuild",
    };
    let _ = writeln!(s, "# Decision: {verdict}\n");
    if let Some(why) = &d.overruled {
        let _ = writeln!(
            s,
            "The cost model recommends a rebuild, but {why}: this is a repair against its advice.\n"
        );
    }
    let what = match (report.error_type.is_empty(), report.message.is_empty()) {
        (true, true) => "an error the log does not name".to_owned(),
        (true, false) => format!("\"{}\"", report.message),
        (false, true) => format!("`{}`", report.error_type),
        (false, false) => format!("`{}`: {}", report.error_type, report.message),
    };
    let _ = writeln!(
        s,
        "The failure ({} category) is {what}.\n",
        report.category.as_str()
    );
    if let Some(w) = innermost_sentence(report) {
        let _ = writeln!(s, "{w}\n");
    }
    if report.suspects.is_empty() {
        let _ = writeln!(s, "No file of the project could be pointed at.\n");
    } else {
        let _ = writeln!(s, "## Where\n");
        for x in report.suspects.iter().take(10) {
            let line = x.line.map(|l| format!(":{l}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "- `{}{line}` (suspicion {:.2}): {}",
                x.file, x.score, x.reason
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Why\n");
    for r in &d.reasons {
        let _ = writeln!(s, "- {r}");
    }
    for n in &report.notes {
        let _ = writeln!(s, "- Note: {n}");
    }
    s
}

/// How an attempt's test runs were carried out, in one sentence.
fn run_paths(p: &proto::messages::RunPaths) -> String {
    let fresh = p.runs.saturating_sub(p.warm);
    let mut s = format!(
        "Test runs: {} in the warm test server ({} of them in a collected session), {fresh} as fresh processes.",
        p.warm, p.collected
    );
    if let Some(off) = &p.warm_off {
        let _ = write!(s, " The warm server was turned off: {off}.");
    }
    s
}
