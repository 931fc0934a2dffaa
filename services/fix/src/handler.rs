//! The fix stage's handler: `MreReady` (first attempt) or `ValidationFailed` (a retry, with
//! the failing output as feedback) in, `FixProposed` out.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use bus::runtime::{Handler, Input, Outcome};
use proto::messages::{
    Candidate, CandidateSource, Engine, EngineChoice, FixProposed, Language, Suspect, Usage,
};
use proto::{Message, Stage};

use crate::diff;
use crate::search::{self, Target};

/// How the search engine spends its budget.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    /// Candidates proposed per attempt.
    pub batch: usize,
    /// Candidates generated per file before ranking.
    pub per_file: usize,
    /// Once the single edits are exhausted, pairs of this many of the best single edits of a
    /// file are tried (their number grows with the square: 10 make at most 45), besides the
    /// same change repeated at two places ([`search::pairs`]).
    pub pair_from: usize,
}

/// The single edits of a file whose repeated changes are paired ([`search::pairs`]).
const PAIRED: usize = 300;

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            batch: 60,
            per_file: 600,
            pair_from: 10,
        }
    }
}

pub struct FixStage {
    pub search: SearchSettings,
    /// Model settings; the model engine is used when a request asks for it.
    pub llm: settings::LlmSettings,
    /// Resolves the request's project (local path, iteration, or object-store snapshot).
    pub projects: std::sync::Arc<store::projects::Projects>,
    /// Recorded outcomes, for the search operators' learned priors.
    pub history: std::sync::Arc<dyn store::HistorySource>,
}

/// The language of `path` when the search engine has a grammar for it.
fn language(path: &str) -> Option<Language> {
    vocab::language_of(path).filter(|l| {
        matches!(
            l,
            Language::Python | Language::JavaScript | Language::TypeScript | Language::Go
        )
    })
}

/// A short stable id of a change, so retries can skip what was tried.
pub fn candidate_id(diff: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in diff.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("s-{h:016x}")
}

/// The next batch of search candidates for the suspects, skipping ids already tried.
pub fn search_candidates(
    root: &Path,
    suspects: &[Suspect],
    tried: &HashSet<String>,
    s: &SearchSettings,
    learned: &std::collections::HashMap<String, f64>,
    raises: &[search::Expected],
) -> Vec<Candidate> {
    let mut by_file: BTreeMap<&str, Vec<Target>> = BTreeMap::new();
    for x in suspects
        .iter()
        .filter(|x| !vocab::is_test_path(&x.file) && language(&x.file).is_some())
    {
        by_file.entry(&x.file).or_default().push(Target {
            line: x.line,
            score: x.score,
        });
    }
    let mut all = vec![];
    let mut texts: Vec<(&str, Language, String)> = vec![];
    for (file, targets) in by_file {
        let Some(lang) = language(file) else { continue };
        // Only regular files inside the project: never follow a suspect path out of it.
        let path = root.join(file);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || file.split('/').any(|c| c == ".." || c.is_empty()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for mut m in
            search::mutants_guided(lang, file, &text, &targets, s.per_file, learned, raises)
        {
            if let Some(d) = diff::unified(file, &text, &m.new_text) {
                // The whole text is let go (pairs are made from the changes), so a large
                // file's candidates cost their diffs, not copies of the file.
                m.new_text = String::new();
                all.push((m, d));
            }
        }
        texts.push((file, lang, text));
    }
    all.sort_by(|(a, _), (b, _)| {
        b.score
            .total_cmp(&a.score)
            .then(a.edit_size.cmp(&b.edit_size))
    });
    // Single edits exhausted (fewer left than a batch): pairs of the best single edits of
    // each file, at most `pair_from` of them, after every single one.
    let fresh = all
        .iter()
        .filter(|(_, d)| !tried.contains(&candidate_id(d)))
        .count();
    if fresh < s.batch {
        let mut pairs = vec![];
        for (file, lang, text) in &texts {
            let best: Vec<search::Mutant> = all
                .iter()
                .filter(|(m, _)| m.file == *file)
                .take(PAIRED)
                .map(|(m, _)| m.clone())
                .collect();
            for m in search::pairs(*lang, file, text, &best, s.pair_from) {
                if let Some(d) = diff::unified(file, text, &m.new_text) {
                    pairs.push((m, d));
                }
            }
        }
        pairs.sort_by(|(a, _), (b, _)| b.score.total_cmp(&a.score));
        all.extend(pairs);
    }
    let mut seen = HashSet::new();
    all.into_iter()
        .filter_map(|(m, d)| {
            let id = candidate_id(&d);
            (!tried.contains(&id) && seen.insert(id.clone())).then(|| Candidate {
                id,
                source: CandidateSource::Search {
                    operator: m.operator.to_owned(),
                },
                at_suspect: suspects
                    .iter()
                    .any(|x| x.file == m.file && x.line == Some(m.line)),
                edit_tokens: u32::try_from(m.edit_size).ok(),
                description: m.description,
                diff: d,
            })
        })
        .take(s.batch)
        .collect()
}

impl Handler for FixStage {
    fn stage(&self) -> Stage {
        Stage::Fix
    }

    async fn handle(&self, input: Input) -> Outcome {
        let (request, triage, decision, mre, attempt, history) = match &*input.message {
            Message::MreReady(m) => (&m.request, &m.triage, &m.decision, &m.mre, 1, vec![]),
            Message::ValidationFailed(f) => (
                &f.request,
                &f.triage,
                &f.decision,
                &f.mre,
                f.attempt + 1,
                f.history.clone(),
            ),
            other => return Outcome::Reject(format!("fix cannot handle `{}`", other.kind())),
        };
        let root = match self.projects.dir(&request.project).await {
            Ok(r) => r,
            Err(e) => return bus::runtime::outcome_for(e),
        };
        let feedback = match &*input.message {
            Message::ValidationFailed(f) => Some(f.feedback.as_str()),
            _ => None,
        };
        // `auto` from a submitted request: this worker's model server, if it answers.
        let use_model = match request.engine {
            EngineChoice::Llm => true,
            EngineChoice::Search => false,
            EngineChoice::Auto => llm::server_answers(&self.llm.server.url).await,
        };
        let (engine, candidates, usage) = if use_model {
            let alias = request
                .model
                .clone()
                .or_else(|| triage.model.clone())
                .unwrap_or_else(|| self.llm.default_model.clone());
            let client = match llm::connect(&self.llm) {
                Ok(c) => c,
                Err(e) => return Outcome::Reject(format!("cannot set up the model client: {e}")),
            };
            let ask = crate::model::Ask {
                root: &root,
                triage,
                mre,
                error_log: &request.error_log,
                attempt,
                history: &history,
                feedback,
            };
            match crate::model::propose(client.as_ref(), &self.llm, &alias, &ask).await {
                Ok(p) => (Engine::Model { name: p.model }, p.candidates, p.usage),
                Err(crate::model::ModelFailure::Transient(r)) => {
                    return Outcome::Retry {
                        after: None,
                        reason: r,
                    };
                }
                Err(crate::model::ModelFailure::Permanent(r)) => return Outcome::Reject(r),
            }
        } else {
            let tried: HashSet<String> = history
                .iter()
                .flat_map(|a| a.candidates.iter().map(|c| c.id.clone()))
                .collect();
            let mut suspects = triage.suspects.clone();
            // Nothing localised (a log that only says the job was cut by a time limit): the
            // functions the failing tests are named after, else the project's source files.
            if !suspects
                .iter()
                .any(|x| !vocab::is_test_path(&x.file) && language(&x.file).is_some())
            {
                suspects = crate::unlocated::suspects(&root, &mre.failing_tests, &|f| {
                    language(f).is_some()
                });
            }
            let (root2, settings) = (root.clone(), self.search.clone());
            let raises = search::expected_raises(&request.error_log, &search::reader_under(&root));
            // Operators that fixed this category of failure before rank higher; a history
            // that cannot be read leaves the configured priors.
            let history = self.history.outcomes(triage.category).unwrap_or_default();
            let learned = search::learned_priors(
                history
                    .iter()
                    .filter(|h| h.success)
                    .filter_map(|h| h.operator.as_deref()),
            );
            match tokio::task::spawn_blocking(move || {
                search_candidates(&root2, &suspects, &tried, &settings, &learned, &raises)
            })
            .await
            {
                Ok(c) => (Engine::Search, c, Usage::default()),
                Err(e) => {
                    return Outcome::Retry {
                        after: None,
                        reason: format!("candidate search failed: {e}"),
                    };
                }
            }
        };
        tracing::info!(repair = %request.repair_id, attempt, %engine, candidates = candidates.len(), "candidates proposed");
        Outcome::Publish(vec![Message::FixProposed(FixProposed {
            request: request.clone(),
            triage: triage.clone(),
            decision: decision.clone(),
            mre: mre.clone(),
            attempt,
            engine,
            candidates,
            usage,
            history,
        })])
    }
}

impl FixStage {
    pub fn from_context(ctx: &bus::context::StageContext) -> FixStage {
        FixStage {
            search: SearchSettings::default(),
            llm: ctx.config.llm.clone(),
            projects: ctx.projects.clone(),
            history: ctx.history.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The corpus bug py_primes-4 (tests/fixtures/classes): both ranges of the sieve stop one
    /// short, and neither fix alone passes the tests. Pairs of edits come only once the single
    /// edits are exhausted, and then the two fixes together are among them.
    #[test]
    fn two_edits_are_combined_once_the_single_edits_are_exhausted() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/classes");
        let index: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(corpus.join("index.json")).unwrap())
                .unwrap();
        let bug = index.iter().find(|b| b["id"] == "py_primes-4").unwrap();
        let s = |k: &str| bug[k].as_str().unwrap().to_owned();
        let reference =
            std::fs::read_to_string(corpus.join("programs/py_primes/arith.py")).unwrap();
        let buggy = reference.replacen(&s("fixed"), &s("buggy"), 1);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("arith.py"), &buggy).unwrap();
        let suspects = [Suspect {
            file: "arith.py".into(),
            line: Some(22),
            score: 1.0,
            reason: String::new(),
        }];
        let settings = SearchSettings::default();
        let learned = Default::default();
        let mut tried = HashSet::new();
        let mut batches = 0;
        let pairs = loop {
            let batch = search_candidates(dir.path(), &suspects, &tried, &settings, &learned, &[]);
            assert!(
                !batch.is_empty() && batches < 30,
                "no pair was ever proposed"
            );
            let (pairs, singles): (Vec<_>, Vec<_>) = batch.into_iter().partition(|c| {
                matches!(&c.source, CandidateSource::Search { operator } if operator == "two-edits")
            });
            if !pairs.is_empty() {
                // Pairs come after the last single edit, in the batch that exhausts them.
                assert!(batches > 0, "pairs before any single edit was tried");
                break pairs;
            }
            tried.extend(singles.into_iter().map(|c| c.id));
            batches += 1;
        };
        let both = pairs.iter().find(|c| {
            c.description
                .contains("`int(n ** 0.5)` → `int(n ** 0.5) + 1`")
                && c.description.contains("`n` → `n + 1`")
        });
        assert!(
            both.is_some(),
            "the two fixes are not combined: {:#?}",
            pairs.iter().map(|c| &c.description).collect::<Vec<_>>()
        );
        // And that pair is the program as written.
        let t = [Target {
            line: Some(22),
            score: 1.0,
        }];
        let singles = search::mutants(Language::Python, "arith.py", &buggy, &t, 600);
        let best: Vec<_> = singles.into_iter().take(PAIRED).collect();
        assert!(
            search::pairs(
                Language::Python,
                "arith.py",
                &buggy,
                &best,
                settings.pair_from
            )
            .iter()
            .any(|m| search::same_ast(
                Language::Python,
                "arith.py",
                &m.new_text,
                &reference
            ) == Some(true))
        );
    }
}
