//! The real-projects corpus (tests/fixtures/real/corpus.json), all of it, side by side for
//! Docker and the local sandbox: the environment built cold beside the same installer run by
//! hand right after it (a venv and pip, `npm ci`, `go mod download`: locally, or with
//! `docker run` on the base image; the goal is cold <= installer + 10%), found warm, its size, and the
//! wall time of a repair and of a second repair of the same project (which builds nothing).
//! Each project is first checked to pass its own tests unbroken (in its local environment),
//! and broken to fail them: the error log is that failing run.
//!
//!   cargo bench -p coval-tests --bench real_projects          (after scripts/dev-services.sh up)
//!   COVAL_BENCH_ONLY=py_yaml_settings,node_semver_pick cargo bench -p coval-tests --bench real_projects
//!   COVAL_BENCH_BACKENDS=local cargo bench ...
//!   COVAL_BENCH_REPEAT=3 cargo bench ...   (cold and by hand in turns 3 times: their medians)
//!
//! Environments live in /var/tmp/coval-bench-env-cache (local) and as coval-env/* images;
//! each cold build prunes that project's environment first.

use std::path::PathBuf;

use anyhow::Result;
use coval_tests::real::{self, Run};

struct Row {
    name: String,
    backend: &'static str,
    cold: f64,
    by_hand: f64,
    warm_process: f64,
    warm_inside: f64,
    mib: f64,
    repair: f64,
    again: f64,
    outcome: String,
    /// Where a Docker cold build's time went (its log's `coval-env: phases:` line).
    phases: String,
}

impl Row {
    /// A project that has a row but no figures: `outcome` says why.
    fn unmeasured(name: &str, backend: &'static str, outcome: String) -> Row {
        Row {
            name: name.to_owned(),
            backend,
            cold: f64::NAN,
            by_hand: f64::NAN,
            warm_process: f64::NAN,
            warm_inside: f64::NAN,
            mib: f64::NAN,
            repair: f64::NAN,
            again: f64::NAN,
            outcome,
            phases: String::new(),
        }
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Result<()> {
    let cache = PathBuf::from("/var/tmp/coval-bench-env-cache");
    let only: Vec<String> = std::env::var("COVAL_BENCH_ONLY")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let backends: Vec<&'static str> = match std::env::var("COVAL_BENCH_BACKENDS").as_deref() {
        Ok("local") => vec!["local"],
        Ok("docker") => vec!["docker"],
        _ => vec!["docker", "local"],
    };
    let repeat: usize = std::env::var("COVAL_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let root = tempfile::tempdir_in("/var/tmp")?;
    let mut rows = vec![];
    for r in real::corpus()? {
        if !only.is_empty() && !only.contains(&r.name) {
            continue;
        }
        let clean = root.path().join(format!("{}-clean", r.name));
        real::make_as(&r, &clean, &cache.join("downloads"), false)?;
        let probe = Run {
            recipe: &r,
            dir: clean,
            backend: "local",
            cache: cache.clone(),
            workspace: root.path().join("ws-probe"),
            env: real::user_env(&r, &cache.join("downloads")),
        };
        let env = probe.build()?;
        let (ok, out) = probe.tests(&env)?;
        if !ok {
            // Not a repair to measure (the error log would not be the bug's): said in the
            // table, with the failing tests' lines here, and the rest of the corpus goes on.
            let failed: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with("FAILED") || l.contains(" failed"))
                .collect();
            eprintln!(
                "{}: the unbroken project fails its own tests (not benched):\n{}",
                r.name,
                failed.join("\n")
            );
            for &backend in &backends {
                rows.push(Row::unmeasured(
                    &r.name,
                    backend,
                    "not benched: the unbroken project fails its own tests".into(),
                ));
            }
            continue;
        }
        for &backend in &backends {
            // One project on one backend; an error is its row, and the corpus goes on.
            let one = || -> Result<Row> {
                let dir = root.path().join(format!("{}-{backend}", r.name));
                real::make(&r, &dir, &cache.join("downloads"))?;
                let run = Run {
                    recipe: &r,
                    dir,
                    backend,
                    cache: cache.clone(),
                    workspace: root.path().join(format!("ws-{}-{backend}", r.name)),
                    env: real::user_env(&r, &cache.join("downloads")),
                };
                // Cold build and installer by hand in turns, `repeat` times (this machine is
                // shared: one pair is noise); their medians go in the table.
                let (mut colds, mut hands) = (vec![], vec![]);
                let mut cold = run.build_cold()?;
                for i in 0..repeat {
                    if i > 0 {
                        cold = run.build_cold()?;
                    }
                    colds.push(cold.seconds);
                    // The same installer by hand, right after (the same caches, the same load).
                    hands.push(real::installer_by_hand(
                        &r,
                        &run.dir,
                        backend,
                        &cache.join("downloads"),
                    )?);
                }
                let phases = if backend == "docker" {
                    std::fs::read_to_string(cache.join(format!("logs/docker-{}.log", cold.key)))
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .find_map(|l| l.strip_prefix("coval-env: phases: "))
                        .unwrap_or("(no phases line in the build log)")
                        .to_owned()
                } else {
                    String::new()
                };
                let by_hand = median(&mut hands);
                let cold_s = median(&mut colds);
                let t = std::time::Instant::now();
                let warm = run.build()?;
                let warm_process = t.elapsed().as_secs_f64();
                if !warm.reused {
                    // Another key at once: the base image was rebuilt meanwhile (another process).
                    eprintln!(
                        "{} {backend}: the second build was not a reuse ({})",
                        r.name, warm.description
                    );
                }
                let mib = run.size(&cold.key)? as f64 / (1024.0 * 1024.0);
                let local = Run {
                    backend: "local",
                    ..Run {
                        recipe: &r,
                        dir: run.dir.clone(),
                        backend,
                        cache: cache.clone(),
                        workspace: run.workspace.clone(),
                        env: real::user_env(&r, &cache.join("downloads")),
                    }
                };
                let log = local.error_log(&local.build()?)?;
                let first = run.repair(&log)?;
                let again = run.repair(&log)?;
                let outcome = match (&first.patch, first.code) {
                    (Some(p), 0) if real::undoes(&r, p) => "fixed".to_owned(),
                    (Some(_), 0) => "fixed elsewhere".to_owned(),
                    (_, c) => format!("exit {c}"),
                };
                let rebuilt = again.stderr.contains("environment: building");
                eprintln!(
                    "{} {backend}: cold {:.1} s, warm {:.2} s, repair {:.1} s ({outcome}), again {:.1} s{}",
                    r.name,
                    cold_s,
                    warm_process,
                    first.wall.as_secs_f64(),
                    again.wall.as_secs_f64(),
                    if rebuilt { " REBUILT" } else { "" }
                );
                if first.code != 0 {
                    eprintln!("{}", first.stderr);
                }
                Ok(Row {
                    name: r.name.clone(),
                    backend,
                    cold: cold_s,
                    by_hand,
                    warm_process,
                    warm_inside: warm.seconds,
                    mib,
                    repair: first.wall.as_secs_f64(),
                    again: again.wall.as_secs_f64(),
                    outcome: if rebuilt {
                        format!("{outcome}, REBUILT")
                    } else {
                        outcome
                    },
                    phases,
                })
            };
            match one() {
                Ok(row) => rows.push(row),
                Err(e) => {
                    eprintln!("{} {backend}: {e:#}", r.name);
                    let first = format!("{e:#}");
                    rows.push(Row::unmeasured(
                        &r.name,
                        backend,
                        format!("bench error: {}", first.lines().next().unwrap_or("")),
                    ));
                }
            }
        }
    }
    println!(
        "\n{:<24} {:<7} {:>9} {:>11} {:>9} {:>12} {:>11} {:>9} {:>9} {:>9}  outcome",
        "project",
        "sandbox",
        "cold s",
        "installer s",
        "cold/inst",
        "warm env s",
        "warm find s",
        "MiB",
        "repair s",
        "again s"
    );
    for r in &rows {
        println!(
            "{:<24} {:<7} {:>9.1} {:>11.1} {:>9.2} {:>12.2} {:>11.3} {:>9.1} {:>9.1} {:>9.1}  {}",
            r.name,
            r.backend,
            r.cold,
            r.by_hand,
            r.cold / r.by_hand.max(0.001),
            r.warm_process,
            r.warm_inside,
            r.mib,
            r.repair,
            r.again,
            r.outcome
        );
    }
    println!(
        "\nwhere a Docker cold build's time goes (the install step's installer is the by-hand installer's counterpart):"
    );
    for r in rows.iter().filter(|r| !r.phases.is_empty()) {
        println!("{:<24} {}", r.name, r.phases);
    }
    let fixed = rows
        .iter()
        .filter(|r| r.outcome.starts_with("fixed"))
        .count();
    println!("{fixed} of {} repairs fixed", rows.len());
    Ok(())
}
