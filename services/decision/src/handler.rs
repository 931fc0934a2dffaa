//! The decision stage's handler: `Triaged` in, `Decided` out. Reads recorded outcomes to refit
//! the success model; everything else is computed from the message.

use std::sync::Arc;

use bus::runtime::{Handler, Input, Outcome};
use proto::messages::{Decided, Decision, TriageReport, Verdict};
use proto::{Message, Stage};
use settings::CostConfig;
use store::{HistoryRecord, HistorySource};

use crate::model::{self, Inputs, WeightsSource};

pub struct DecisionStage {
    pub cost: CostConfig,
    pub min_samples: usize,
    pub history: Arc<dyn HistorySource>,
}

/// Decide for one triage report, given the category's recorded outcomes.
pub fn decide(
    cost: &CostConfig,
    min_samples: usize,
    report: &TriageReport,
    history: &[HistoryRecord],
) -> Decision {
    let m = &report.metrics;
    let inputs = Inputs {
        debt: m.debt,
        coverage: m.coverage,
        context: m.context,
        capability: m.capability,
        region_lines: m.region_lines,
        module_lines: m.module_lines,
    };
    let c = model::costs(cost, &inputs);
    let f = model::features(&inputs);
    let outcomes: Vec<([f64; 5], bool)> = history
        .iter()
        .filter_map(|h| {
            <[f64; 5]>::try_from(h.features.as_slice())
                .ok()
                .map(|f| (f, h.success))
        })
        .collect();
    let (weights, source) = model::weights_for(&cost.prior, &outcomes, min_samples, cost.refit_l2);
    let p = model::probability(&weights, &f);

    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    let mut reasons = vec![
        format!(
            "Technical debt D = {:.2} (0 = simple, documented, no duplication; 1 = tangled){}.",
            c.debt,
            if c.debt > m.debt {
                format!(", raised to the floor {:.2}", cost.min_debt)
            } else {
                String::new()
            }
        ),
        format!(
            "Test coverage T = {:.2} ({}).",
            c.coverage,
            if m.coverage_measured {
                "measured by a coverage tool"
            } else {
                "estimated from the tests present, not measured"
            }
        ),
        format!(
            "Available context K = {:.2} (trace, failing test, tests, manifest and docs present).",
            c.context
        ),
        format!(
            "Capability S = {:.2} of the engine that would write the fix.",
            c.capability
        ),
        format!(
            "The fault region is {} lines in a module of {} lines, so a rebuild rewrites R = {:.1} regions' worth of code.",
            m.region_lines.max(cost.min_region_lines),
            m.module_lines.max(m.region_lines),
            c.size_ratio
        ),
        format!(
            "Cost to repair C_fix = γ·D/(S·K)·(1+λ(1−T)) = {:.2}·{:.2}/({:.2}·{:.2})·(1+{:.2}·{:.2}) = {:.3}.",
            cost.gamma,
            c.debt,
            c.capability,
            c.context,
            cost.lambda,
            1.0 - c.coverage,
            c.c_fix
        ),
        format!(
            "Cost to rebuild C_new = the same formula for new code (D = {:.2}, K = {:.2}) times R = {:.3}.",
            cost.new_code_debt, cost.rebuild_context, c.c_new
        ),
        match c.verdict {
            Verdict::Repair => format!(
                "Repair: C_fix {:.3} is not above {:.1} × C_new = {:.3}.",
                c.c_fix,
                cost.rebuild_threshold,
                cost.rebuild_threshold * c.c_new
            ),
            Verdict::Rebuild => format!(
                "Rebuild: C_fix {:.3} is above {:.1} × C_new = {:.3}.",
                c.c_fix,
                cost.rebuild_threshold,
                cost.rebuild_threshold * c.c_new
            ),
        },
        match source {
            WeightsSource::Prior { samples, needed } => format!(
                "Estimated chance that a repair succeeds p = {} (configured prior weights: {samples} recorded {} outcomes, {needed} needed to refit).",
                pct(p),
                report.category.as_str()
            ),
            WeightsSource::Refit { samples } => format!(
                "Estimated chance that a repair succeeds p = {} (weights refit from {samples} recorded {} outcomes).",
                pct(p),
                report.category.as_str()
            ),
        },
    ];
    if !m.coverage_measured && m.coverage == 0.0 {
        reasons.push("No tests were found: a repair cannot be proven, only made to run.".into());
    }
    Decision {
        verdict: c.verdict,
        c_fix: c.c_fix,
        c_new: c.c_new,
        p_success: p,
        reasons,
        features: f.to_vec(),
    }
}

impl Handler for DecisionStage {
    fn stage(&self) -> Stage {
        Stage::Decision
    }

    async fn handle(&self, input: Input) -> Outcome {
        let Message::Triaged(t) = &*input.message else {
            return Outcome::Reject(format!("decision cannot handle `{}`", input.message.kind()));
        };
        let history = match self.history.outcomes(t.report.category) {
            Ok(h) => h,
            Err(e) if e.is_retryable() => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("cannot read history: {e}"),
                };
            }
            // A corrupt history must not block repairs: decide on the prior.
            Err(_) => vec![],
        };
        let decision = decide(&self.cost, self.min_samples, &t.report, &history);
        Outcome::Publish(vec![Message::Decided(Decided {
            request: t.request.clone(),
            triage: t.report.clone(),
            decision,
        })])
    }
}

impl DecisionStage {
    pub fn from_context(ctx: &bus::context::StageContext) -> DecisionStage {
        let s = &ctx.config.settings;
        DecisionStage {
            cost: s.cost_calculation.clone(),
            min_samples: s.global.adaptive_evaluation.min_samples as usize,
            history: ctx.history.clone(),
        }
    }
}
