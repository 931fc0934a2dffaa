//! The decision model: the seed's repair cost against a rebuild cost on the same scale, and a
//! logistic success probability whose weights are refit per category from recorded outcomes.
//!
//! Both costs are the seed's formula `γ·D·(1/S)·(1/K)·(1+λ(1−T))`, read as "expected effort,
//! in clean attempts over the fault region":
//! - repair: D, S, K, T of the project as triage measured them;
//! - rebuild: the same formula for freshly written code (D = new_code_debt, K = rebuild_context,
//!   same S and T), times R = module lines / region lines, because a rebuild rewrites the whole
//!   module while a repair works on the region around the fault.
//!
//! So a one-line bug with a precise trace in a big module costs little to repair and a lot to
//! rebuild, while a vague failure in tangled untested code (region = whole module, R = 1) costs
//! more to repair than to rewrite. The original put C_new in other units and nearly always chose
//! rebuild; here the two differ only by what really differs.

use proto::messages::Verdict;
use settings::{CostConfig, SuccessWeights};

/// What the model needs from triage, each on 0..=1 except the line counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    pub debt: f64,
    pub coverage: f64,
    pub context: f64,
    pub capability: f64,
    pub region_lines: u64,
    pub module_lines: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Costs {
    pub c_fix: f64,
    pub c_new: f64,
    /// R: how many fault regions a rebuild rewrites.
    pub size_ratio: f64,
    /// The D, S, K actually used (after floors and clamps).
    pub debt: f64,
    pub capability: f64,
    pub context: f64,
    pub coverage: f64,
    pub verdict: Verdict,
}

const FLOOR: f64 = 0.01;

fn unit(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The seed's formula.
pub fn seed_cost(gamma: f64, d: f64, s: f64, k: f64, t: f64, lambda: f64) -> f64 {
    gamma * d * (1.0 / s) * (1.0 / k) * (1.0 + lambda * (1.0 - t))
}

pub fn costs(cfg: &CostConfig, x: &Inputs) -> Costs {
    let debt = unit(x.debt).max(cfg.min_debt);
    let capability = unit(x.capability).max(FLOOR);
    let context = unit(x.context).max(FLOOR);
    let coverage = unit(x.coverage);
    let region = x.region_lines.max(cfg.min_region_lines).max(1);
    let module = x.module_lines.max(region);
    let size_ratio = module as f64 / region as f64;
    let c_fix = seed_cost(cfg.gamma, debt, capability, context, coverage, cfg.lambda);
    let c_new = seed_cost(
        cfg.gamma,
        cfg.new_code_debt,
        capability,
        cfg.rebuild_context,
        coverage,
        cfg.lambda,
    ) * size_ratio;
    let verdict = if c_fix > cfg.rebuild_threshold * c_new {
        Verdict::Rebuild
    } else {
        Verdict::Repair
    };
    Costs {
        c_fix,
        c_new,
        size_ratio,
        debt,
        capability,
        context,
        coverage,
        verdict,
    }
}

pub const FEATURES: [&str; 5] = ["debt", "coverage", "context", "capability", "size"];

/// The success model's features: D, T, K, S, and the region size scaled to 0..=1.
pub fn features(x: &Inputs) -> [f64; 5] {
    [
        unit(x.debt),
        unit(x.coverage),
        unit(x.context),
        unit(x.capability),
        (x.region_lines as f64 / 200.0).min(1.0),
    ]
}

fn as_vec(w: &SuccessWeights) -> [f64; 6] {
    [w.bias, w.debt, w.coverage, w.context, w.capability, w.size]
}

fn from_vec(v: [f64; 6]) -> SuccessWeights {
    SuccessWeights {
        bias: v[0],
        debt: v[1],
        coverage: v[2],
        context: v[3],
        capability: v[4],
        size: v[5],
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// p = σ(w·x + b), kept strictly inside (0, 1).
pub fn probability(w: &SuccessWeights, f: &[f64; 5]) -> f64 {
    let v = as_vec(w);
    let z = v[0] + f.iter().zip(&v[1..]).map(|(x, w)| x * w).sum::<f64>();
    sigmoid(z).clamp(1e-6, 1.0 - 1e-6)
}

/// Where the weights came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightsSource {
    Prior { samples: usize, needed: usize },
    Refit { samples: usize },
}

/// Refit the weights to recorded outcomes by maximum a posteriori logistic regression: the
/// log-likelihood plus a Gaussian pull of strength `l2` towards the prior (Newton's method).
/// With few samples the answer stays near the prior; with many it follows the data.
pub fn refit(prior: &SuccessWeights, samples: &[([f64; 5], bool)], l2: f64) -> SuccessWeights {
    let w0 = as_vec(prior);
    let mut w = w0;
    for _ in 0..50 {
        let mut grad = [0.0; 6];
        let mut hess = [[0.0; 6]; 6];
        for (f, y) in samples {
            let x = [1.0, f[0], f[1], f[2], f[3], f[4]];
            let z: f64 = x.iter().zip(&w).map(|(a, b)| a * b).sum();
            let p = sigmoid(z);
            let r = if *y { 1.0 } else { 0.0 } - p;
            let s = p * (1.0 - p);
            for i in 0..6 {
                grad[i] += r * x[i];
                for j in 0..6 {
                    hess[i][j] += s * x[i] * x[j];
                }
            }
        }
        for i in 0..6 {
            grad[i] -= l2 * (w[i] - w0[i]);
            hess[i][i] += l2 + 1e-9;
        }
        let Some(step) = solve(hess, grad) else { break };
        let mut size = 0.0f64;
        for i in 0..6 {
            // Damped, so a separable sample cannot send weights to infinity in one step.
            let d = step[i].clamp(-5.0, 5.0);
            w[i] += d;
            size = size.max(d.abs());
        }
        if size < 1e-8 {
            break;
        }
    }
    if w.iter().all(|v| v.is_finite()) {
        from_vec(w)
    } else {
        *prior
    }
}

/// Solve `a·x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: [[f64; 6]; 6], mut b: [f64; 6]) -> Option<[f64; 6]> {
    for col in 0..6 {
        let pivot = (col..6).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..6 {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 6];
    for row in (0..6).rev() {
        let s: f64 = (row + 1..6).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// The weights to use for a category: refit from its recorded outcomes once there are
/// `min_samples` of them, else the prior.
pub fn weights_for(
    prior: &SuccessWeights,
    outcomes: &[([f64; 5], bool)],
    min_samples: usize,
    l2: f64,
) -> (SuccessWeights, WeightsSource) {
    if outcomes.len() >= min_samples.max(1) {
        (
            refit(prior, outcomes, l2),
            WeightsSource::Refit {
                samples: outcomes.len(),
            },
        )
    } else {
        (
            *prior,
            WeightsSource::Prior {
                samples: outcomes.len(),
                needed: min_samples,
            },
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shipped cost model (no configuration file is read).
    pub(crate) fn cfg() -> CostConfig {
        settings::load(&settings::LoadOptions {
            cwd: std::env::temp_dir().join("coval-no-config-here"),
            ..Default::default()
        })
        .expect("defaults load")
        .settings
        .cost_calculation
    }

    /// splitmix64: a small deterministic generator, so property runs are reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn inputs(&mut self) -> Inputs {
            let region = 1 + (self.next() * 300.0) as u64;
            Inputs {
                debt: self.next(),
                coverage: self.next(),
                context: self.next(),
                capability: self.next(),
                region_lines: region,
                module_lines: region + (self.next() * 3000.0) as u64,
            }
        }
    }

    #[test]
    fn costs_move_the_right_way() {
        let c = cfg();
        let mut rng = Rng(7);
        for _ in 0..5000 {
            let x = rng.inputs();
            let base = costs(&c, &x);
            let up = |f: &dyn Fn(&mut Inputs)| {
                let mut y = x;
                f(&mut y);
                costs(&c, &y).c_fix
            };
            let d = rng.next() * 0.5 + 0.01;
            // More debt raises C_fix (unless both sit at the floor).
            if x.debt + d > c.min_debt {
                assert!(
                    up(&|y| y.debt = (x.debt + d).min(1.0)) >= base.c_fix,
                    "{x:?}"
                );
            }
            assert!(
                up(&|y| y.coverage = (x.coverage + d).min(1.0)) <= base.c_fix,
                "{x:?}"
            );
            assert!(
                up(&|y| y.context = (x.context + d).min(1.0)) <= base.c_fix,
                "{x:?}"
            );
            assert!(
                up(&|y| y.capability = (x.capability + d).min(1.0)) <= base.c_fix,
                "{x:?}"
            );
            assert!(
                base.c_fix.is_finite()
                    && base.c_new.is_finite()
                    && base.c_fix > 0.0
                    && base.c_new > 0.0
            );
        }
        // Strictly, away from the floors and clamps.
        let x = Inputs {
            debt: 0.4,
            coverage: 0.5,
            context: 0.5,
            capability: 0.5,
            region_lines: 20,
            module_lines: 400,
        };
        let f = |y: Inputs| costs(&c, &y).c_fix;
        assert!(f(Inputs { debt: 0.6, ..x }) > f(x));
        assert!(f(Inputs { coverage: 0.7, ..x }) < f(x));
        assert!(f(Inputs { context: 0.7, ..x }) < f(x));
        assert!(
            f(Inputs {
                capability: 0.7,
                ..x
            }) < f(x)
        );
    }

    #[test]
    fn probability_is_inside_and_monotone_as_configured() {
        let c = cfg();
        let w = c.prior;
        let signs = [w.debt, w.coverage, w.context, w.capability, w.size];
        let mut rng = Rng(11);
        for _ in 0..5000 {
            let f = features(&rng.inputs());
            let p = probability(&w, &f);
            assert!(p > 0.0 && p < 1.0);
            for (i, sign) in signs.iter().enumerate() {
                let mut g = f;
                g[i] = (g[i] + 0.1).min(1.0);
                let q = probability(&w, &g);
                if *sign > 0.0 {
                    assert!(q >= p);
                } else if *sign < 0.0 {
                    assert!(q <= p);
                }
            }
        }
        // Extreme weights stay strictly inside (0, 1).
        let huge = SuccessWeights { bias: 1e6, ..w };
        assert!(probability(&huge, &[1.0; 5]) < 1.0);
    }

    #[test]
    fn refit_recovers_known_weights() {
        let truth = SuccessWeights {
            bias: -0.5,
            debt: -3.0,
            coverage: 1.5,
            context: 2.0,
            capability: 1.0,
            size: -2.0,
        };
        let mut rng = Rng(3);
        let samples: Vec<([f64; 5], bool)> = (0..40_000)
            .map(|_| {
                let f = [rng.next(), rng.next(), rng.next(), rng.next(), rng.next()];
                let y = rng.next() < probability(&truth, &f);
                (f, y)
            })
            .collect();
        let prior = SuccessWeights {
            bias: 0.0,
            debt: 0.0,
            coverage: 0.0,
            context: 0.0,
            capability: 0.0,
            size: 0.0,
        };
        let got = refit(&prior, &samples, 0.01);
        for (g, t) in as_vec(&got).iter().zip(as_vec(&truth)) {
            assert!((g - t).abs() < 0.25, "refit {got:?} vs truth {truth:?}");
        }
        // Few samples barely move a strong prior.
        let few = refit(&prior, &samples[..5], 50.0);
        assert!(as_vec(&few).iter().all(|v| v.abs() < 0.1), "{few:?}");
        // Degenerate data (all successes) stays finite.
        let all: Vec<_> = samples.iter().map(|(f, _)| (*f, true)).take(100).collect();
        assert!(
            as_vec(&refit(&prior, &all, 0.0))
                .iter()
                .all(|v| v.is_finite())
        );
    }

    #[test]
    fn a_precise_small_bug_is_repaired_and_a_vague_tangle_is_rebuilt() {
        let c = cfg();
        let small = costs(
            &c,
            &Inputs {
                debt: 0.1,
                coverage: 0.8,
                context: 0.9,
                capability: 0.75,
                region_lines: 6,
                module_lines: 60,
            },
        );
        assert_eq!(small.verdict, Verdict::Repair, "{small:?}");
        let tangle = costs(
            &c,
            &Inputs {
                debt: 0.8,
                coverage: 0.0,
                context: 0.2,
                capability: 0.75,
                region_lines: 2000,
                module_lines: 2000,
            },
        );
        assert_eq!(tangle.verdict, Verdict::Rebuild, "{tangle:?}");
    }
}
