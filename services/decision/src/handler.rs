//! The decision stage's handler: `Triaged` in, `Decided` out. Reads recorded outcomes to refit
//! the success model; everything else is computed from the message.

use std::sync::Arc;

use bus::runtime::{Handler, Input, Outcome};
use proto::messages::Decided;
use proto::{Message, Stage};
use settings::CostConfig;
use store::HistorySource;

use crate::decide::{decide, overrule, rebuild_overruled};

pub struct DecisionStage {
    pub cost: CostConfig,
    pub min_samples: usize,
    /// `global.no_rebuild`: repair whatever the cost model recommends.
    pub no_rebuild: bool,
    pub history: Arc<dyn HistorySource>,
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
        let mut decision = decide(&self.cost, self.min_samples, &t.report, &history);
        if let Some(why) = rebuild_overruled(&t.request, self.no_rebuild) {
            overrule(&mut decision, why);
        }
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
            no_rebuild: s.global.no_rebuild,
            history: ctx.history.clone(),
        }
    }
}
