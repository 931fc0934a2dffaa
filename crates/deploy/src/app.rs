//! How to run an iteration: its framework (from `sandbox::detect_project`), the
//! base image it runs on (`deploy.images`), the command that starts it on `$HOST:$PORT`, and
//! the health check Docker runs inside the container.

use std::path::Path;

use sandbox::detect_project;
use settings::DeployConfig;
use vocab::Language;

use crate::DeployError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub framework: String,
    pub language: Language,
    /// The base image (`deploy.images[framework]`).
    pub image: String,
    /// Starts the app listening on `$HOST:$PORT`, run in `/app`.
    pub command: Vec<String>,
    /// Docker's health check, run inside the container.
    pub healthcheck: Vec<String>,
}

fn read_small(dir: &Path, name: &str) -> Option<String> {
    let p = dir.join(name);
    let meta = std::fs::symlink_metadata(&p).ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return None;
    }
    std::fs::read_to_string(p).ok()
}

/// The Python module among `candidates` whose text contains `marker` (`main` for `main.py`).
fn python_module(dir: &Path, candidates: &[&str], marker: &str) -> Option<String> {
    candidates
        .iter()
        .find(|f| read_small(dir, f).is_some_and(|t| t.contains(marker)))
        .map(|f| f.trim_end_matches(".py").to_owned())
}

/// A file name that is safe inside `sh -c`: letters, digits, `_ . / -`, no `..`.
fn shell_safe(s: &str) -> bool {
    !s.is_empty()
        && !s.contains("..")
        && !s.starts_with('/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
}

fn node_entry(dir: &Path) -> Option<String> {
    let pkg: serde_json::Value = read_small(dir, "package.json")
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let from_start = pkg
        .get("scripts")
        .and_then(|s| s.get("start"))
        .and_then(|s| s.as_str())
        .and_then(|s| s.trim().strip_prefix("node "))
        .map(|s| s.trim().to_owned());
    let from_main = pkg.get("main").and_then(|m| m.as_str()).map(str::to_owned);
    from_start
        .into_iter()
        .chain(from_main)
        .chain(["server.js", "index.js", "app.js"].map(String::from))
        .find(|f| shell_safe(f) && read_small(dir, f).is_some())
}

/// What `coval run` needs to know to run the app in `dir`.
pub fn detect(dir: &Path, cfg: &DeployConfig) -> Result<AppSpec, DeployError> {
    let kind = detect_project(dir).ok_or_else(|| {
        DeployError::Input(format!(
            "{} holds no app coval can run (no requirements.txt, pyproject.toml or package.json)",
            dir.display()
        ))
    })?;
    let fw = kind.framework.as_str();
    let unknown = || {
        DeployError::Input(format!(
            "coval run deploys FastAPI, Flask and Express apps; {} is {}",
            dir.display(),
            if fw.is_empty() {
                "no recognised framework".to_owned()
            } else {
                format!("a {fw} app")
            }
        ))
    };
    let py_health = |path: &str| {
        vec![
            "CMD".to_owned(),
            "python3".into(),
            "-c".into(),
            format!(
                "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '{path}', timeout=2)"
            ),
        ]
    };
    let node_health = |path: &str| {
        vec![
            "CMD".to_owned(),
            "node".into(),
            "-e".into(),
            format!(
                "fetch('http://127.0.0.1:' + process.env.PORT + '{path}').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
            ),
        ]
    };
    let health_path = if shell_safe(cfg.health_path.trim_start_matches('/')) {
        cfg.health_path.clone()
    } else {
        "/health".to_owned()
    };
    let (command, healthcheck) = match fw {
        "fastapi" => {
            let module = python_module(dir, &["main.py", "app.py", "api.py"], "FastAPI(")
                .ok_or_else(|| {
                    DeployError::Input(format!(
                        "no main.py or app.py creating `app = FastAPI(...)` in {}",
                        dir.display()
                    ))
                })?;
            (
                format!(
                    "exec python3 -m uvicorn {module}:app --host \"$HOST\" --port \"$PORT\" --no-access-log"
                ),
                py_health(&health_path),
            )
        }
        "flask" => {
            let module = python_module(dir, &["app.py", "main.py", "wsgi.py"], "Flask(")
                .ok_or_else(|| {
                    DeployError::Input(format!(
                        "no app.py or main.py creating `app = Flask(...)` in {}",
                        dir.display()
                    ))
                })?;
            (
                format!(
                    "exec python3 -m flask --app {module} run --host \"$HOST\" --port \"$PORT\""
                ),
                py_health(&health_path),
            )
        }
        "express" => {
            let entry = node_entry(dir).ok_or_else(|| {
                DeployError::Input(format!(
                    "no start script, main, server.js or index.js in {}",
                    dir.display()
                ))
            })?;
            (format!("exec node {entry}"), node_health(&health_path))
        }
        _ => return Err(unknown()),
    };
    let image = cfg.images.get(fw).cloned().ok_or_else(|| {
        DeployError::Input(format!(
            "no base image for {fw} in deploy.images: add one to coval.config.yaml"
        ))
    })?;
    Ok(AppSpec {
        framework: fw.to_owned(),
        language: kind.language,
        image,
        command: vec!["sh".into(), "-c".into(), command],
        healthcheck,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::Framework;

    fn cfg() -> DeployConfig {
        settings::load(&settings::LoadOptions::default())
            .unwrap()
            .settings
            .deploy
    }

    #[test]
    fn templates_are_runnable() {
        for fw in Framework::ALL {
            let d = tempfile::tempdir().unwrap();
            for (p, c) in fw.files("x") {
                let p = d.path().join(p);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, c).unwrap();
            }
            let spec = detect(d.path(), &cfg()).unwrap();
            assert_eq!(spec.framework, fw.as_str());
            let cmd = &spec.command[2];
            match fw {
                Framework::FastApi => assert!(cmd.contains("uvicorn main:app"), "{cmd}"),
                Framework::Flask => assert!(cmd.contains("--app app run"), "{cmd}"),
                Framework::Express => assert_eq!(cmd, "exec node server.js"),
            }
        }
    }

    #[test]
    fn unknown_and_unsafe_apps_are_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            detect(d.path(), &cfg()),
            Err(DeployError::Input(_))
        ));
        std::fs::write(
            d.path().join("package.json"),
            r#"{"scripts":{"start":"node $(rm -rf /).js"},"dependencies":{"express":"4"}}"#,
        )
        .unwrap();
        assert!(detect(d.path(), &cfg()).is_err());
        std::fs::write(d.path().join("index.js"), "1").unwrap();
        assert_eq!(
            detect(d.path(), &cfg()).unwrap().command[2],
            "exec node index.js"
        );
    }
}
