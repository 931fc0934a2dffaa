//! Candidates from a language model: a first-attempt or retry prompt, one chat call, and the
//! answer parsed into typed edits and normalised into one unified diff. Model output is data:
//! it is parsed, never executed, and an unusable answer becomes a failed candidate with the
//! reason.

use std::path::Path;

use llm::{ChatRequest, Edit, ModelClient};
use proto::messages::{AttemptRecord, Candidate, CandidateSource, MreSummary, TriageReport, Usage};
use settings::LlmSettings;

use crate::diff;

/// Why no call could be made.
pub enum ModelFailure {
    /// Worth retrying later (the server is busy or restarting).
    Transient(String),
    /// Will not succeed (not configured, not pulled with auto-pull off, bad key).
    Permanent(String),
}

pub struct Proposal {
    pub candidates: Vec<Candidate>,
    pub usage: Usage,
    pub model: String,
}

/// The project files a model should see: suspect code files, most suspicious first.
fn suspect_files(root: &Path, triage: &TriageReport) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![];
    for s in &triage.suspects {
        if out.len() >= 4 || out.iter().any(|(p, _)| p == &s.file) || vocab::is_test_path(&s.file) {
            continue;
        }
        if s.file.split('/').any(|c| c == ".." || c.is_empty()) {
            continue;
        }
        let p = root.join(&s.file);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file())
            && let Ok(text) = std::fs::read_to_string(&p)
        {
            out.push((s.file.clone(), text));
        }
    }
    out
}

/// Turn the model's edits into one unified diff against the project.
pub fn edits_to_diff(root: &Path, edits: &[Edit]) -> Result<String, String> {
    let mut out = String::new();
    for e in edits {
        match e {
            Edit::UnifiedDiff { text } => out.push_str(text),
            Edit::SearchReplace {
                path,
                search,
                replace,
            } => {
                let old = std::fs::read_to_string(root.join(path)).unwrap_or_default();
                let new = if search.is_empty() {
                    replace.clone()
                } else {
                    match old.matches(search.as_str()).count() {
                        1 => old.replacen(search.as_str(), replace, 1),
                        0 => return Err(format!("the search text for {path} is not in the file")),
                        n => return Err(format!("the search text for {path} occurs {n} times")),
                    }
                };
                out.push_str(&diff::unified(path, &old, &new).unwrap_or_default());
            }
            Edit::WholeFile { path, content } => {
                let old = std::fs::read_to_string(root.join(path)).unwrap_or_default();
                out.push_str(&diff::unified(path, &old, content).unwrap_or_default());
            }
        }
    }
    if out.trim().is_empty() {
        return Err("the answer changes nothing".into());
    }
    Ok(out)
}

pub struct Ask<'a> {
    pub root: &'a Path,
    pub triage: &'a TriageReport,
    pub mre: &'a MreSummary,
    pub error_log: &'a str,
    pub attempt: u32,
    pub history: &'a [AttemptRecord],
    pub feedback: Option<&'a str>,
}

/// One model call for one attempt.
pub async fn propose(
    client: &dyn ModelClient,
    settings: &LlmSettings,
    alias: &str,
    ask: &Ask<'_>,
) -> Result<Proposal, ModelFailure> {
    let classify = |e: llm::LlmError| {
        if e.is_retryable() || e.is_unreachable() {
            ModelFailure::Transient(e.to_string())
        } else {
            ModelFailure::Permanent(e.to_string())
        }
    };
    let mut log_progress =
        |p: &llm::PullProgress| tracing::info!(status = %p.status, "pulling the model");
    let model = llm::ensure_model(client, settings, alias, &mut log_progress)
        .await
        .map_err(classify)?;
    let files = suspect_files(ask.root, ask.triage);
    let input = llm::prompt::PromptInput {
        report: ask.triage,
        files: &files,
        mre: Some(ask.mre),
        failure_output: Some(ask.error_log),
    };
    let previous: Vec<llm::prompt::PreviousAttempt> = ask
        .history
        .iter()
        .filter_map(|a| {
            let c = a.candidates.first()?;
            Some(llm::prompt::PreviousAttempt {
                attempt: a.attempt,
                diff: &c.diff,
                test_output: ask.feedback.unwrap_or(""),
            })
        })
        .collect();
    let prompt = if ask.attempt <= 1 || previous.is_empty() {
        llm::prompt::first_attempt(&input, model)
    } else {
        llm::prompt::retry(&input, &previous, model)
    }
    .map_err(|e| ModelFailure::Permanent(e.to_string()))?;
    let resp = client
        .chat(&ChatRequest::new(model, prompt.messages()))
        .await
        .map_err(classify)?;
    let id = format!("m-{}-{}", alias, ask.attempt);
    let source = CandidateSource::Model {
        name: model.model_name.clone(),
    };
    let candidate = if resp.truncated() {
        Candidate {
            id,
            source,
            description: format!(
                "unusable answer: cut off at max_tokens ({})",
                model.max_tokens
            ),
            diff: String::new(),
            edit_tokens: None,
            at_suspect: false,
        }
    } else {
        match llm::parse_response(&resp.content)
            .map_err(|e| e.to_string())
            .and_then(|edits| {
                let kinds: Vec<&str> = edits.iter().map(|e| e.kind()).collect();
                edits_to_diff(ask.root, &edits).map(|d| (d, kinds.join(", ")))
            }) {
            Ok((d, kinds)) => Candidate {
                id,
                source,
                description: format!("{} answer ({kinds})", model.model_name),
                diff: d,
                edit_tokens: None,
                at_suspect: false,
            },
            Err(reason) => Candidate {
                id,
                source,
                description: format!("unusable answer: {reason}"),
                diff: String::new(),
                edit_tokens: None,
                at_suspect: false,
            },
        }
    };
    Ok(Proposal {
        candidates: vec![candidate],
        usage: resp.usage,
        model: alias.to_owned(),
    })
}
