//! Generate and deploy: `coval generate` (framework templates, features written by a model,
//! every generated file cleaned and path-checked, the app's tests run in the sandbox) and
//! `coval run` / `coval stop` (an image per iteration on the local base images, a health
//! check, blue-green switching behind a small proxy that owns the stable port, rollback).
//!
//! Model output is data: it is parsed into edits, checked, and written only inside a staging
//! copy of the iteration; it is never executed on the host. The generated app's own code runs
//! only in containers (its tests in the sandbox, the app itself in its deployment).

pub mod app;
pub mod engine;
pub mod generate;
pub mod probe;
pub mod proxy;
pub mod run;
pub mod safety;
pub mod tarball;
pub mod templates;

/// Everything that can stop a generation or a deployment, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Bad input: an unknown iteration, framework or strategy, a port in use.
    #[error("{0}")]
    Input(String),
    /// A required service (Docker, the model server) does not answer, or a base image is missing.
    #[error("{0}")]
    Unreachable(String),
    /// The new version did not become healthy (rolled back), or its tests failed.
    #[error("{0}")]
    Unhealthy(String),
    /// The model's answer was refused or unusable.
    #[error("{0}")]
    Refused(String),
    /// Anything else (the engine refused a request, IO).
    #[error("{0}")]
    Internal(String),
}

impl DeployError {
    /// The exit code of `coval` for this error ([`vocab::exit`]).
    pub fn exit_code(&self) -> u8 {
        use vocab::exit;
        match self {
            DeployError::Input(_) => exit::BAD_INPUT,
            DeployError::Unreachable(_) => exit::UNREACHABLE,
            DeployError::Unhealthy(_) | DeployError::Refused(_) => exit::NOT_DONE,
            DeployError::Internal(_) => exit::INTERNAL,
        }
    }

    pub(crate) fn docker(op: &str) -> impl Fn(bollard::errors::Error) -> DeployError + '_ {
        move |e| DeployError::Internal(format!("docker {op} failed: {e}"))
    }
}

/// A name Docker accepts in container and image names: lowercase `[a-z0-9_.-]`, starting
/// with a letter or digit, at most 40 characters.
pub fn docker_safe(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.starts_with(['-', '.', '_']) {
        out.remove(0);
    }
    out.truncate(40);
    while out.ends_with(['-', '.', '_']) {
        out.pop();
    }
    if out.is_empty() { "app".into() } else { out }
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_names_are_safe() {
        assert_eq!(super::docker_safe("My Shop!"), "my-shop");
        assert_eq!(super::docker_safe("../x"), "x");
        assert_eq!(super::docker_safe("---"), "app");
        assert_eq!(super::docker_safe(&"a".repeat(90)).len(), 40);
    }
}
