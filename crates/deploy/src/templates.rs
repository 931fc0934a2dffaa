//! The framework templates `coval generate` starts from: each a working app with a `/health`
//! endpoint, a Dockerfile (for users' registries), a test and its dependency manifest. The
//! files live in `crates/deploy/templates/<framework>/`; `{{NAME}}` becomes the app's name.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    FastApi,
    Flask,
    Express,
}

impl Framework {
    pub const ALL: [Framework; 3] = [Framework::FastApi, Framework::Flask, Framework::Express];

    pub fn as_str(self) -> &'static str {
        match self {
            Framework::FastApi => "fastapi",
            Framework::Flask => "flask",
            Framework::Express => "express",
        }
    }

    /// The language key (`vocab::LanguageExt::key`).
    pub fn language(self) -> &'static str {
        match self {
            Framework::FastApi | Framework::Flask => "python",
            Framework::Express => "node",
        }
    }

    /// Languages `-l` may name for this framework.
    pub fn accepts_language(self, lang: &str) -> bool {
        let lang = lang.to_ascii_lowercase();
        match self {
            Framework::FastApi | Framework::Flask => matches!(lang.as_str(), "python" | "py"),
            Framework::Express => matches!(lang.as_str(), "javascript" | "js" | "node"),
        }
    }

    /// The default framework of a language.
    pub fn for_language(lang: &str) -> Option<Framework> {
        match lang.to_ascii_lowercase().as_str() {
            "python" | "py" => Some(Framework::FastApi),
            "javascript" | "js" | "node" => Some(Framework::Express),
            _ => None,
        }
    }

    /// The test file the model should extend with tests of the features it writes.
    pub fn test_file(self) -> &'static str {
        match self {
            Framework::FastApi => "test_main.py",
            Framework::Flask => "test_app.py",
            Framework::Express => "test/app.test.js",
        }
    }

    /// The template's files, with `{{NAME}}` replaced by `name`.
    pub fn files(self, name: &str) -> Vec<(String, String)> {
        let raw: &[(&str, &str)] = match self {
            Framework::FastApi => &[
                ("main.py", include_str!("../templates/fastapi/main.py")),
                (
                    "test_main.py",
                    include_str!("../templates/fastapi/test_main.py"),
                ),
                (
                    "requirements.txt",
                    include_str!("../templates/fastapi/requirements.txt"),
                ),
                (
                    "Dockerfile",
                    include_str!("../templates/fastapi/Dockerfile"),
                ),
            ],
            Framework::Flask => &[
                ("app.py", include_str!("../templates/flask/app.py")),
                (
                    "test_app.py",
                    include_str!("../templates/flask/test_app.py"),
                ),
                (
                    "requirements.txt",
                    include_str!("../templates/flask/requirements.txt"),
                ),
                ("Dockerfile", include_str!("../templates/flask/Dockerfile")),
            ],
            Framework::Express => &[
                ("app.js", include_str!("../templates/express/app.js")),
                ("server.js", include_str!("../templates/express/server.js")),
                (
                    "test/app.test.js",
                    include_str!("../templates/express/test/app.test.js"),
                ),
                (
                    "package.json",
                    include_str!("../templates/express/package.json"),
                ),
                (
                    "Dockerfile",
                    include_str!("../templates/express/Dockerfile"),
                ),
            ],
        };
        raw.iter()
            .map(|(p, c)| ((*p).to_owned(), c.replace("{{NAME}}", name)))
            .collect()
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Framework {
    type Err = String;
    fn from_str(s: &str) -> Result<Framework, String> {
        match s.to_ascii_lowercase().as_str() {
            "fastapi" => Ok(Framework::FastApi),
            "flask" => Ok(Framework::Flask),
            "express" | "expressjs" => Ok(Framework::Express),
            other => Err(format!(
                "unknown framework `{other}`: use one of fastapi, flask, express"
            )),
        }
    }
}

/// A short app name from a description: its first words, Docker- and package-safe.
pub fn app_name(description: &str) -> String {
    let words: Vec<String> = description
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(3)
        .map(str::to_ascii_lowercase)
        .collect();
    let name = crate::docker_safe(&words.join("-"));
    if name == "app" || name.is_empty() {
        "coval-app".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vocab::LanguageExt;

    #[test]
    fn every_template_has_health_a_test_a_manifest_and_a_dockerfile() {
        for fw in Framework::ALL {
            let files = fw.files("shop");
            let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
            assert!(names.contains(&"Dockerfile"), "{fw}");
            assert!(names.contains(&fw.test_file()), "{fw}");
            assert!(
                names.contains(&"requirements.txt") || names.contains(&"package.json"),
                "{fw}"
            );
            assert!(
                files.iter().any(|(_, c)| c.contains("/health")),
                "{fw} has no /health"
            );
            assert!(files.iter().all(|(_, c)| !c.contains("{{NAME}}")), "{fw}");
            let kind = {
                let d = tempfile::tempdir().unwrap();
                for (p, c) in &files {
                    let p = d.path().join(p);
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(p, c).unwrap();
                }
                sandbox::detect_project(d.path()).unwrap()
            };
            assert_eq!(kind.framework, fw.as_str());
            assert_eq!(kind.language.key(), fw.language());
        }
    }

    #[test]
    fn names_and_parsing() {
        assert_eq!(app_name("A todo API with tags"), "a-todo-api");
        assert_eq!(app_name("!!!"), "coval-app");
        assert_eq!("FastAPI".parse::<Framework>(), Ok(Framework::FastApi));
        assert!("django".parse::<Framework>().is_err());
        assert!(Framework::Express.accepts_language("JavaScript"));
        assert!(!Framework::Flask.accepts_language("go"));
    }
}
