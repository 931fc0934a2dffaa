//! What a CI job says about itself when it submits a repair: repository, commit, branch and
//! job URL (shown in the report), and the key that makes a retried job's submission the same
//! one. Read from flags, else from the standard variables of GitHub Actions and GitLab CI.

use clap::Args;
use proto::messages::Origin;

#[derive(Args, Debug, Clone, Default)]
pub struct OriginArgs {
    /// Repository the failure comes from, shown in the report (default: the CI's,
    /// GITHUB_REPOSITORY or CI_PROJECT_PATH)
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
    /// Commit the failure comes from (default: GITHUB_SHA or CI_COMMIT_SHA)
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// Branch the failure comes from (default: the CI's branch)
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// Page of the failing job, shown in the report (default: the CI's run or job URL)
    #[arg(long, value_name = "URL")]
    pub job_url: Option<String>,
    /// Submit at most one repair per KEY: a second submit with the same key (a retried CI
    /// job) prints the first one's repair id and starts nothing. `coval submit` defaults to
    /// the CI's run: in GitHub Actions repository, run id and job, in GitLab CI project,
    /// pipeline id and job name (give a matrix job's legs keys of their own); `repair --nats`
    /// de-duplicates only with this flag
    #[arg(long, value_name = "KEY")]
    pub dedup_key: Option<String>,
    /// Do not de-duplicate, even in CI: every submit starts a repair
    #[arg(long, conflicts_with = "dedup_key")]
    pub no_dedup: bool,
}

/// The CI's standard variables, looked up by `var`.
fn from_ci(var: &dyn Fn(&str) -> Option<String>) -> Origin {
    let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
    if get("GITHUB_ACTIONS").as_deref() == Some("true") {
        let repository = get("GITHUB_REPOSITORY");
        // The run's page: the same for every attempt of the run.
        let job_url = match (get("GITHUB_SERVER_URL"), &repository, get("GITHUB_RUN_ID")) {
            (Some(server), Some(repo), Some(run)) => Some(format!(
                "{}/{repo}/actions/runs/{run}",
                server.trim_end_matches('/')
            )),
            _ => None,
        };
        // GITHUB_RUN_ATTEMPT grows when a job is re-run; the run id and the job's id do not.
        let dedup_key = match (&repository, get("GITHUB_RUN_ID"), get("GITHUB_JOB")) {
            (Some(repo), Some(run), Some(job)) => Some(format!("github/{repo}/{run}/{job}")),
            _ => None,
        };
        return Origin {
            ci: Some("github".into()),
            repository,
            commit: get("GITHUB_SHA"),
            // A pull request's source branch; else the branch or tag that triggered the run.
            branch: get("GITHUB_HEAD_REF").or_else(|| get("GITHUB_REF_NAME")),
            job_url,
            dedup_key,
        };
    }
    if get("GITLAB_CI").as_deref() == Some("true") {
        let repository = get("CI_PROJECT_PATH");
        // A retried job gets a new CI_JOB_ID; its pipeline and name stay.
        let dedup_key = match (&repository, get("CI_PIPELINE_ID"), get("CI_JOB_NAME")) {
            (Some(p), Some(pipeline), Some(job)) => Some(format!("gitlab/{p}/{pipeline}/{job}")),
            _ => None,
        };
        return Origin {
            ci: Some("gitlab".into()),
            repository,
            commit: get("CI_COMMIT_SHA"),
            branch: get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME")
                .or_else(|| get("CI_COMMIT_REF_NAME")),
            job_url: get("CI_JOB_URL"),
            dedup_key,
        };
    }
    Origin::default()
}

/// The origin of a request: flags over the CI's variables (looked up by `var`).
pub fn origin_with(args: &OriginArgs, var: &dyn Fn(&str) -> Option<String>) -> Origin {
    let ci = from_ci(var);
    let flag = |f: &Option<String>| f.clone().filter(|v| !v.trim().is_empty());
    Origin {
        ci: ci.ci,
        repository: flag(&args.repository).or(ci.repository),
        commit: flag(&args.commit).or(ci.commit),
        branch: flag(&args.branch).or(ci.branch),
        job_url: flag(&args.job_url).or(ci.job_url),
        dedup_key: if args.no_dedup {
            None
        } else {
            flag(&args.dedup_key).or(ci.dedup_key)
        },
    }
}

/// [`origin_with`] the process environment.
pub fn origin(args: &OriginArgs) -> Origin {
    origin_with(args, &|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const GITHUB: &[(&str, &str)] = &[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "acme/shop"),
        ("GITHUB_SHA", "0123abc"),
        ("GITHUB_REF_NAME", "main"),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_RUN_ID", "987"),
        ("GITHUB_RUN_ATTEMPT", "2"),
        ("GITHUB_JOB", "test"),
    ];

    #[test]
    fn github_actions_names_the_run_and_a_retried_attempt_keeps_its_key() {
        let o = origin_with(&OriginArgs::default(), &vars(GITHUB));
        assert_eq!(o.ci.as_deref(), Some("github"));
        assert_eq!(o.repository.as_deref(), Some("acme/shop"));
        assert_eq!(o.commit.as_deref(), Some("0123abc"));
        assert_eq!(o.branch.as_deref(), Some("main"));
        assert_eq!(
            o.job_url.as_deref(),
            Some("https://github.com/acme/shop/actions/runs/987")
        );
        assert_eq!(o.dedup_key.as_deref(), Some("github/acme/shop/987/test"));
        const THIRD: &[(&str, &str)] = &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_RUN_ID", "987"),
            ("GITHUB_RUN_ATTEMPT", "3"),
            ("GITHUB_JOB", "test"),
        ];
        let again = origin_with(&OriginArgs::default(), &vars(THIRD));
        assert_eq!(again.dedup_key, o.dedup_key);
    }

    #[test]
    fn gitlab_keys_on_pipeline_and_job_name_not_the_job_id() {
        const GITLAB: &[(&str, &str)] = &[
            ("GITLAB_CI", "true"),
            ("CI_PROJECT_PATH", "acme/shop"),
            ("CI_COMMIT_SHA", "fedcba9"),
            ("CI_COMMIT_REF_NAME", "fix-1"),
            ("CI_JOB_URL", "https://gitlab.example/acme/shop/-/jobs/55"),
            ("CI_JOB_ID", "55"),
            ("CI_PIPELINE_ID", "12"),
            ("CI_JOB_NAME", "coval"),
        ];
        let o = origin_with(&OriginArgs::default(), &vars(GITLAB));
        assert_eq!(o.ci.as_deref(), Some("gitlab"));
        assert_eq!(o.branch.as_deref(), Some("fix-1"));
        assert_eq!(
            o.job_url.as_deref(),
            Some("https://gitlab.example/acme/shop/-/jobs/55")
        );
        assert_eq!(o.dedup_key.as_deref(), Some("gitlab/acme/shop/12/coval"));
    }

    #[test]
    fn flags_win_and_outside_ci_nothing_is_made_up() {
        let none = origin_with(&OriginArgs::default(), &vars(&[]));
        assert!(none.is_empty());
        let args = OriginArgs {
            commit: Some("cafe".into()),
            dedup_key: Some("mine".into()),
            ..Default::default()
        };
        let o = origin_with(&args, &vars(GITHUB));
        assert_eq!(o.commit.as_deref(), Some("cafe"));
        assert_eq!(o.repository.as_deref(), Some("acme/shop"));
        assert_eq!(o.dedup_key.as_deref(), Some("mine"));
        let off = OriginArgs {
            no_dedup: true,
            ..Default::default()
        };
        assert_eq!(origin_with(&off, &vars(GITHUB)).dedup_key, None);
    }
}
