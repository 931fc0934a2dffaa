//! From a parsed log and a project to a triage report: localisation plus the metrics D, T,
//! K, S. Pure apart from reading the project that was scanned before.

use std::collections::HashMap;

use logparse::ParsedLog;
use proto::messages::{Category, EngineChoice, Metrics, TriageReport};
use settings::{AdaptiveConfig, CostConfig, LlmSettings};
use store::HistoryRecord;

use crate::localise;
use crate::metrics::{self, FileMetrics};
use crate::project::Project;

/// What triage needs from the configuration.
#[derive(Debug, Clone)]
pub struct TriageConfig {
    pub llm: LlmSettings,
    pub cost: CostConfig,
    pub adaptive: AdaptiveConfig,
}

/// Which engine the fix would come from, as far as triage can tell.
#[derive(Debug, Clone, PartialEq)]
pub struct Engine {
    /// `search` or a model alias.
    pub name: String,
    pub is_model: bool,
    /// The request named this model (else triage may choose a better one).
    pub explicit: bool,
}

pub fn engine_for(engine: EngineChoice, model: Option<&str>, llm: &LlmSettings) -> Engine {
    match engine {
        EngineChoice::Search => Engine {
            name: "search".into(),
            is_model: false,
            explicit: true,
        },
        // `auto` is resolved by the client (model when it answers, else search) before the
        // request is sent; one that arrives unresolved is estimated as the model.
        EngineChoice::Llm | EngineChoice::Auto => Engine {
            name: model.unwrap_or(&llm.default_model).to_owned(),
            is_model: true,
            explicit: model.is_some(),
        },
    }
}

/// Capability S of an engine on a category, adjusted for code size and recorded history.
pub fn capability(
    cfg: &TriageConfig,
    engine: &Engine,
    category: Category,
    module_lines: u64,
    history: &[HistoryRecord],
    notes: &mut Vec<String>,
) -> f64 {
    let (base, adjust) = if engine.is_model {
        let base = match cfg.llm.models.get(&engine.name) {
            Some(m) => {
                // About 12 tokens per line of code; past 60% of the window the model sees
                // the code only in part.
                if module_lines.saturating_mul(12) > u64::from(m.context_window) * 6 / 10 {
                    notes.push(format!(
                        "the suspect code ({module_lines} lines) may not fit {}'s context window of {} tokens: capability lowered",
                        engine.name, m.context_window
                    ));
                    m.base_capability - 0.1
                } else {
                    m.base_capability
                }
            }
            None => {
                notes.push(format!(
                    "model `{}` is not configured: capability assumed 0.5",
                    engine.name
                ));
                0.5
            }
        };
        let adjust = match category {
            Category::Syntax => 0.1,
            Category::Name => 0.05,
            Category::Import | Category::Type => 0.0,
            Category::Runtime | Category::FileConfig => -0.05,
            Category::Network | Category::Other => -0.1,
            Category::Environment => -0.15,
        };
        (base, adjust)
    } else {
        // The search engine mutates expressions and statements: strong on logic slips, weak
        // on anything that needs new code or a changed environment.
        let adjust = match category {
            Category::Runtime => 0.1,
            Category::Type | Category::Name | Category::Other => -0.2,
            _ => -0.3,
        };
        (cfg.cost.search_capability, adjust)
    };
    let mut s = base + adjust;
    let mine: Vec<&HistoryRecord> = history.iter().filter(|h| h.engine == engine.name).collect();
    let min = cfg.adaptive.min_samples as usize;
    if !mine.is_empty() && mine.len() >= min.max(1) {
        let rate = mine.iter().filter(|h| h.success).count() as f64 / mine.len() as f64;
        let w = cfg.adaptive.history_weight;
        notes.push(format!(
            "{} succeeded in {:.0}% of {} recorded {} repairs: weighted {:.0}% into its capability",
            engine.name,
            rate * 100.0,
            mine.len(),
            category.as_str(),
            w * 100.0
        ));
        s = (1.0 - w) * s + w * rate;
    }
    s.clamp(0.05, 0.99)
}

/// The whole triage of one failure.
pub fn triage(
    cfg: &TriageConfig,
    parsed: &ParsedLog,
    project: &Project,
    engine: &Engine,
    history: &[HistoryRecord],
    spectrum: Option<&crate::spectrum::Spectrum>,
) -> TriageReport {
    let mut notes = vec![];
    let analysed: HashMap<String, FileMetrics> = project
        .files
        .values()
        .map(|f| {
            (
                f.path.clone(),
                metrics::analyse(f.language, &f.path, &f.text),
            )
        })
        .collect();
    // A compiler diagnostic or assertion location counts as the innermost frame.
    let mut frames = parsed.frames.clone();
    if let Some(l) = &parsed.location
        && !frames.iter().any(|f| f.file == l.file && f.line == l.line)
    {
        frames.insert(0, l.clone());
    }
    for f in &mut frames {
        localise::resolve_in_place(project, f);
    }
    let innermost = parsed.project_frame().cloned().map(|mut f| {
        localise::resolve_in_place(project, &mut f);
        f
    });
    // A wrapper whose own frames are all framework code: its cause's frames locate the fault.
    let mut localised = frames.clone();
    if !frames.iter().any(|f| f.in_project) {
        let mut cause = parsed.cause.as_deref();
        while let Some(c) = cause {
            if c.frames.iter().any(|f| f.in_project) {
                localised.extend(c.frames.iter().cloned());
                break;
            }
            cause = c.cause.as_deref();
        }
    }
    let mut suspects = localise::localise(project, &localised, &parsed.failing_tests, &analysed);
    // Spectrum ranks lines inside the code the trace points at; a trace frame still leads.
    if let Some(sp) = spectrum {
        for x in &sp.suspects {
            if !suspects
                .iter()
                .any(|s| s.file == x.file && s.line == x.line)
            {
                suspects.push(proto::messages::Suspect {
                    score: (x.score * 0.9 * 1000.0).round() / 1000.0,
                    ..x.clone()
                });
            }
        }
        suspects.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.file.cmp(&b.file))
                .then(a.line.cmp(&b.line))
        });
        suspects.truncate(50);
        notes.extend(sp.notes.iter().cloned());
    }
    if suspects.is_empty() && frames.iter().any(|f| f.in_project) {
        notes.push("the trace names files that were not found in the source directory".into());
    }

    // The code a fix or a rebuild is about: suspect code files, else all code.
    let mut considered: Vec<&str> = vec![];
    for s in suspects.iter().filter(|s| s.score >= 0.5) {
        if project.files.get(&s.file).is_some_and(|f| !f.is_test)
            && !considered.contains(&s.file.as_str())
        {
            considered.push(&s.file);
        }
    }
    let vague = considered.is_empty();
    if vague {
        considered = project.source_files().map(|f| f.path.as_str()).collect();
        notes.push("no precise location: the whole project's code is the fault region".into());
    }
    let pairs: Vec<(&str, &FileMetrics)> = considered
        .iter()
        .filter_map(|p| Some((project.files.get(*p)?.text.as_str(), analysed.get(*p)?)))
        .collect();
    let debt = metrics::debt(&pairs);
    let module_lines: u64 = pairs.iter().map(|(_, m)| m.loc).sum();
    let region_lines = if vague {
        module_lines
    } else {
        suspects
            .iter()
            .find(|s| project.files.get(&s.file).is_some_and(|f| !f.is_test))
            .and_then(|s| {
                let m = analysed.get(&s.file)?;
                match s.line.and_then(|l| m.enclosing(l)) {
                    Some(f) => Some(u64::from(f.end_line - f.start_line + 1)),
                    None => Some(m.loc),
                }
            })
            .unwrap_or(module_lines)
    };

    // T: estimated from how much test code there is (measured coverage replaces it when a
    // sandbox run with a coverage tool is available).
    let src_loc: u64 = project
        .source_files()
        .filter_map(|f| analysed.get(&f.path))
        .map(|m| m.loc)
        .sum();
    let test_loc: u64 = project
        .test_files()
        .filter_map(|f| analysed.get(&f.path))
        .map(|m| m.loc)
        .sum();
    let measured = spectrum.and_then(|s| s.coverage);
    let coverage = if let Some(c) = measured {
        c
    } else if src_loc == 0 || test_loc == 0 {
        0.0
    } else {
        (test_loc as f64 / src_loc as f64).min(1.0) * 0.8
    };
    if measured.is_none() {
        notes.push(format!(
            "coverage T is an estimate from {test_loc} lines of tests for {src_loc} lines of code, not a measurement"
        ));
    }

    // K: what a fixer has to go on.
    let has_trace_line = frames.iter().any(|f| f.in_project && f.line.is_some())
        && suspects.iter().any(|s| s.line.is_some());
    let parts = [
        (0.35, has_trace_line),
        (0.20, !parsed.failing_tests.is_empty()),
        (0.15, project.test_files().next().is_some()),
        (0.15, !project.manifests.is_empty()),
        (0.15, !project.docs.is_empty()),
    ];
    let context = parts
        .iter()
        .filter(|(_, on)| *on)
        .map(|(w, _)| w)
        .sum::<f64>()
        .max(0.05);

    // No model named: pick the configured model with the best expected success here.
    let mut chosen = None;
    let engine = match (engine.is_model, engine.explicit) {
        (true, false) => {
            let mut best: Option<(f64, String)> = None;
            for alias in cfg.llm.models.keys() {
                let e = Engine {
                    name: alias.clone(),
                    is_model: true,
                    explicit: true,
                };
                let s = capability(cfg, &e, parsed.category, module_lines, history, &mut vec![]);
                if best.as_ref().is_none_or(|(b, _)| s > *b) {
                    best = Some((s, alias.clone()));
                }
            }
            match best {
                Some((s, alias)) => {
                    notes.push(format!(
                        "model `{alias}` chosen: the best expected capability ({s:.2}) on {} problems of {module_lines} lines among the configured models",
                        parsed.category.as_str()
                    ));
                    chosen = Some(alias.clone());
                    Engine {
                        name: alias,
                        is_model: true,
                        explicit: true,
                    }
                }
                None => engine.clone(),
            }
        }
        _ => engine.clone(),
    };
    let capability = capability(
        cfg,
        &engine,
        parsed.category,
        module_lines,
        history,
        &mut notes,
    );
    if project.truncated {
        notes.push(
            "the project is larger than the scan limits: some files were not analysed".into(),
        );
    }
    TriageReport {
        language: if parsed.language == proto::messages::Language::Unknown {
            project.main_language()
        } else {
            parsed.language
        },
        error_type: parsed.error_type.clone(),
        message: parsed.message.clone(),
        category: parsed.category,
        frames,
        failing_tests: parsed.failing_tests.clone(),
        suspects,
        metrics: Metrics {
            debt: debt.debt,
            coverage,
            coverage_measured: measured.is_some(),
            context,
            capability,
            loc: src_loc,
            region_lines,
            module_lines,
        },
        notes,
        model: chosen,
        innermost,
    }
}
