//! One decision in numbers and words: the model ([`crate::model`]) applied to a triage report
//! and its category's recorded outcomes, with the reasons a report shows.

use proto::messages::{Decision, EngineChoice, Metrics, RepairRequested, TriageReport, Verdict};
use settings::CostConfig;
use store::HistoryRecord;

use crate::model::{self, Inputs, WeightsSource};

/// What the model reads from triage's metrics.
pub fn inputs(m: &Metrics) -> Inputs {
    Inputs {
        debt: m.debt,
        coverage: m.coverage,
        context: m.context,
        capability: m.capability,
        region_lines: m.region_lines,
        module_lines: m.module_lines,
    }
}

/// The recorded outcomes a refit learns from: records with features of another shape (from
/// an older model) are left out.
pub fn samples(history: &[HistoryRecord]) -> Vec<([f64; 5], bool)> {
    history
        .iter()
        .filter_map(|h| {
            <[f64; 5]>::try_from(h.features.as_slice())
                .ok()
                .map(|f| (f, h.success))
        })
        .collect()
}

/// Decide for one triage report, given the category's recorded outcomes: the verdict, the
/// costs and the success probability, and the reasons in words for the report.
pub fn decide(
    cost: &CostConfig,
    min_samples: usize,
    report: &TriageReport,
    history: &[HistoryRecord],
) -> Decision {
    let m = &report.metrics;
    let inputs = inputs(m);
    let c = model::costs(cost, &inputs);
    let f = model::features(&inputs);
    let outcomes = samples(history);
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
        overruled: None,
    }
}

/// Why a rebuild recommendation cannot be the verdict of this request, if it cannot: the
/// request asks for a repair regardless (`--no-rebuild`), the configuration does
/// (`global.no_rebuild`), or the engine that will run (the search engine) cannot rebuild.
pub fn rebuild_overruled(request: &RepairRequested, no_rebuild: bool) -> Option<&'static str> {
    if request.no_rebuild {
        Some("a repair was asked for regardless (--no-rebuild)")
    } else if no_rebuild {
        Some("the configuration asks for a repair regardless (global.no_rebuild)")
    } else if request.engine == EngineChoice::Search {
        Some("the search engine cannot rebuild")
    } else {
        None
    }
}

/// Follow the repair path although the cost model recommends a rebuild, and say so: the
/// recommendation stays in the reasons and in `overruled`, so the report shows the disagreement.
pub fn overrule(d: &mut Decision, why: &str) {
    if d.verdict != Verdict::Rebuild {
        return;
    }
    d.verdict = Verdict::Repair;
    d.overruled = Some(why.to_owned());
    d.reasons.push(format!(
        "The cost model recommends a rebuild, but {why}: the repair goes on, against the cost model."
    ));
}

#[cfg(test)]
mod tests {
    use proto::messages::Category;

    use super::*;
    use crate::model::tests::cfg;

    fn report(coverage: f64, coverage_measured: bool) -> TriageReport {
        TriageReport {
            metrics: Metrics {
                debt: 0.1,
                coverage,
                coverage_measured,
                context: 0.9,
                capability: 0.75,
                loc: 60,
                region_lines: 6,
                module_lines: 60,
            },
            ..Default::default()
        }
    }

    fn record(features: Vec<f64>, success: bool) -> HistoryRecord {
        HistoryRecord {
            repair: proto::RepairId::new(),
            category: Category::default(),
            engine: "search".into(),
            success,
            features,
            at_ms: 0,
            operator: None,
        }
    }

    #[test]
    fn only_records_of_the_model_s_shape_are_samples() {
        let h = [
            record(vec![0.1, 0.2, 0.3, 0.4, 0.5], true),
            record(vec![0.1, 0.2, 0.3, 0.4], false),
            record(vec![], true),
            record(vec![0.5; 5], false),
        ];
        assert_eq!(
            samples(&h),
            [([0.1, 0.2, 0.3, 0.4, 0.5], true), ([0.5; 5], false)]
        );
    }

    #[test]
    fn the_decision_is_the_model_s_and_says_where_its_weights_come_from() {
        let c = cfg();
        let r = report(0.8, true);
        let d = decide(&c, 2, &r, &[]);
        let costs = model::costs(&c, &inputs(&r.metrics));
        let f = model::features(&inputs(&r.metrics));
        assert_eq!(d.verdict, Verdict::Repair);
        assert_eq!(
            (d.verdict, d.c_fix, d.c_new),
            (costs.verdict, costs.c_fix, costs.c_new)
        );
        assert_eq!(d.features, f.to_vec());
        assert_eq!(d.p_success, model::probability(&c.prior, &f));
        assert!(
            d.reasons.iter().any(|s| s.starts_with("Repair: C_fix")),
            "{d:?}"
        );
        // Below the samples needed the prior decides; records of another shape do not count.
        let short = [record(vec![0.5; 5], true), record(vec![0.5; 4], true)];
        let d = decide(&c, 2, &r, &short);
        assert!(
            d.reasons
                .iter()
                .any(|s| s.contains("configured prior weights: 1 recorded")),
            "{d:?}"
        );
        let enough = [record(vec![0.5; 5], true), record(vec![0.2; 5], false)];
        let d = decide(&c, 2, &r, &enough);
        assert!(
            d.reasons
                .iter()
                .any(|s| s.contains("weights refit from 2 recorded")),
            "{d:?}"
        );
    }

    #[test]
    fn a_project_without_tests_is_told_that_a_repair_cannot_be_proven() {
        let c = cfg();
        let no_tests = "No tests were found: a repair cannot be proven, only made to run.";
        let said = |r: &TriageReport| decide(&c, 2, r, &[]).reasons.iter().any(|s| s == no_tests);
        assert!(said(&report(0.0, false)));
        assert!(!said(&report(0.0, true)));
        assert!(!said(&report(0.3, false)));
    }

    #[test]
    fn a_rebuild_nothing_can_carry_out_is_overruled_and_the_reasons_say_so() {
        let mut req = proto::messages::RepairRequested {
            repair_id: proto::RepairId::new(),
            project: proto::messages::ProjectRef::LocalPath { path: ".".into() },
            error_log: String::new(),
            test_cmd: None,
            iteration: None,
            engine: EngineChoice::Llm,
            model: None,
            max_attempts: 1,
            analyze_only: false,
            requested_at_ms: 0,
            no_rebuild: false,
            origin: None,
        };
        assert_eq!(rebuild_overruled(&req, false), None, "a model can rebuild");
        assert!(rebuild_overruled(&req, true).is_some_and(|w| w.contains("global.no_rebuild")));
        req.no_rebuild = true;
        assert!(rebuild_overruled(&req, false).is_some_and(|w| w.contains("--no-rebuild")));
        req.no_rebuild = false;
        req.engine = EngineChoice::Search;
        let why = rebuild_overruled(&req, false).expect("search cannot rebuild");
        let mut d = decide(&cfg(), 2, &report(0.8, true), &[]);
        d.verdict = Verdict::Rebuild;
        overrule(&mut d, why);
        assert_eq!(d.verdict, Verdict::Repair);
        assert_eq!(d.overruled.as_deref(), Some(why));
        assert!(
            d.reasons
                .last()
                .is_some_and(|r| r.contains("recommends a rebuild") && r.contains(why)),
            "{d:?}"
        );
        // A repair verdict is left alone.
        let mut d = decide(&cfg(), 2, &report(0.8, true), &[]);
        overrule(&mut d, why);
        assert_eq!((d.verdict, d.overruled), (Verdict::Repair, None));
    }
}
