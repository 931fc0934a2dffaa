//! Configuration: built-in defaults (the files shipped in `config/`), then
//! `coval.config.yaml` and `llm.config.yaml`, then `COVAL_*` environment variables, then
//! command-line flags, merged by the `config` crate. Every layer is checked on its own first,
//! so an unknown key or a bad value is reported with the file (or variable) it came from, the
//! key, and what to do.
//!
//! It owns the configuration types and their loading; it must never import the bus, the store,
//! the sandbox or a stage, so that a model client (`llm`) or `deploy` needs nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config as Merged, Environment, File, FileFormat};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const DEFAULT_SETTINGS: &str = include_str!("../../../config/coval.config.yaml");
pub const DEFAULT_LLM: &str = include_str!("../../../config/llm.config.yaml");
pub const SETTINGS_FILE: &str = "coval.config.yaml";
pub const LLM_FILE: &str = "llm.config.yaml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub project: ProjectConfig,
    pub docker: DockerConfig,
    pub volumes: VolumesConfig,
    pub cost_calculation: CostConfig,
    pub global: GlobalConfig,
    pub bus: BusConfig,
    pub sandbox: SandboxConfig,
    pub triage: TriageSettings,
    pub deploy: DeployConfig,
    pub validate: ValidateConfig,
}

/// The `deploy:` section: `coval generate` and `coval run` (network mode, host address and
/// the first port are in `docker:`, the default strategy in `volumes:`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// The path every app answers 200 on when it is ready.
    pub health_path: String,
    /// A new version must answer its health check within this, else it is rolled back.
    pub health_timeout_secs: u64,
    pub health_interval_ms: u64,
    /// After a switch, connections to the old version may finish within this before it stops.
    pub drain_secs: u64,
    /// Base image per framework (`fastapi`, `flask`, `express`, ...); the image the app's
    /// tests run in during `coval generate`, and the one `coval run` builds on.
    pub images: BTreeMap<String, String>,
    /// Limits of a deployed container.
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: u32,
    /// The largest file a model may write during `coval generate`.
    pub max_file_kb: u64,
    /// The most files one generation may write.
    pub max_files: usize,
}

/// The `validate:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// Run a search candidate's baseline-failing tests first and the whole suite only for
    /// candidates that make them pass (pytest projects); the verdict always comes from the
    /// whole suite.
    pub failing_first: bool,
    /// With `failing_first` and the warm server: a candidate that changes only function
    /// bodies of imported project modules runs its failing tests in a fork of a pytest session
    /// collected once on the project (its code swapped in), when that cannot change the
    /// verdict; anything else runs as usual.
    #[serde(default = "yes")]
    pub collected: bool,
    /// Candidates validated at once, each in its own sandbox session (container or local
    /// server); 0: one per CPU core, at most [`MAX_LANES`].
    #[serde(default)]
    pub lanes: u32,
}

fn yes() -> bool {
    true
}

/// The most validation lanes `validate.lanes: 0` picks.
pub const MAX_LANES: usize = 4;

impl ValidateConfig {
    /// The lanes to use: the configured number, or one per available core (at most
    /// [`MAX_LANES`]) when it is 0.
    pub fn lanes(&self) -> usize {
        match self.lanes {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, MAX_LANES),
            n => n as usize,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageSettings {
    /// Run the tests once with per-test line coverage (Python, coverage.py in the sandbox)
    /// to measure T and rank lines by Ochiai.
    pub coverage: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    pub framework: String,
    pub language: String,
    pub max_iterations: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    Host,
    Bridge,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    pub base_port: u16,
    pub network_name: String,
    pub network_mode: NetworkMode,
    pub host_ip: std::net::IpAddr,
    pub auto_cleanup: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeStrategy {
    Overlay,
    Copy,
    Symlink,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumesConfig {
    pub strategy: VolumeStrategy,
    pub preserve_permissions: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    pub gamma: f64,
    pub lambda: f64,
    pub rebuild_threshold: f64,
    /// Floor of D in C_fix, so clean code still costs something to repair.
    pub min_debt: f64,
    /// D of freshly written code, used in C_new.
    pub new_code_debt: f64,
    /// K for a rebuild: the old code and the tests serve as its specification.
    pub rebuild_context: f64,
    /// Smallest fault region, in lines.
    pub min_region_lines: u64,
    /// S of the built-in search engine (no model).
    pub search_capability: f64,
    /// Weights of the success probability before history is available.
    pub prior: SuccessWeights,
    /// Pull of the prior on a refit (L2 strength; higher trusts the prior more).
    pub refit_l2: f64,
}

/// p = σ(bias + debt·D + coverage·T + context·K + capability·S + size·min(1, region/200)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessWeights {
    pub bias: f64,
    pub debt: f64,
    pub coverage: f64,
    pub context: f64,
    pub capability: f64,
    pub size: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    pub timeout: u64,
    pub max_iterations: u32,
    pub adaptive_evaluation: AdaptiveConfig,
    /// Repair even when the cost model recommends a rebuild (the report says it disagreed).
    #[serde(default)]
    pub no_rebuild: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    pub history_weight: f64,
    pub min_samples: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub namespace: String,
    pub concurrency: usize,
    pub ack_wait_secs: u64,
    pub progress_interval_secs: u64,
    pub max_deliver: u32,
    pub retry_backoff_secs: u64,
    pub retry_backoff_max_secs: u64,
    pub duplicate_window_secs: u64,
    pub max_ack_pending: i64,
    pub work_max_bytes: i64,
    pub dead_letter_max_age_hours: u64,
    pub event_max_age_hours: u64,
    pub connect_timeout_secs: u64,
    pub publish_timeout_secs: u64,
    pub max_reconnects: usize,
    /// The largest project snapshot (bytes of file contents) sent through the object store.
    #[serde(default = "default_snapshot_max_bytes")]
    pub snapshot_max_bytes: u64,
    /// Copies of every stream and bucket coval creates (JetStream `num_replicas`): 1 on one
    /// server, 3 on a three-node cluster (`deploy/nats/cluster/`).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a worker keeps trying to bind its stage's consumer (a cluster electing a
    /// leader, a node restarting) before it gives up with exit code 3.
    #[serde(default = "default_setup_timeout_secs")]
    pub setup_timeout_secs: u64,
}

fn default_snapshot_max_bytes() -> u64 {
    vocab::DEFAULT_SNAPSHOT_MAX_BYTES
}

fn default_replicas() -> usize {
    1
}

fn default_setup_timeout_secs() -> u64 {
    300
}

impl BusConfig {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs)
    }

    pub fn setup_timeout(&self) -> Duration {
        Duration::from_secs(self.setup_timeout_secs)
    }

    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_secs)
    }

    pub fn progress_interval(&self) -> Duration {
        Duration::from_secs(self.progress_interval_secs)
    }

    /// The delay before delivery `delivered + 1` after a transient failure.
    pub fn backoff(&self, delivered: u32) -> Duration {
        let exp = delivered.saturating_sub(1).min(20);
        let secs = self.retry_backoff_secs.saturating_mul(1u64 << exp);
        Duration::from_secs(secs.min(self.retry_backoff_max_secs))
    }

    /// The longest time between a message's first delivery and its last: every delivery
    /// times out and every retry waits its full backoff.
    pub fn longest_retry_span(&self) -> Duration {
        let waits: u64 = (1..self.max_deliver)
            .map(|d| self.backoff(d).as_secs())
            .sum();
        Duration::from_secs(waits + u64::from(self.max_deliver) * self.ack_wait_secs)
    }
}

/// Which sandbox runs tests: `auto` prefers Docker when it answers and has a base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxBackend {
    Auto,
    Docker,
    Local,
}

/// The `sandbox:` section (see `sandbox`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    pub backend: SandboxBackend,
    /// OCI runtime for Docker (e.g. `runsc`); empty: the engine's default.
    pub runtime: String,
    /// Base image per language key (`python`, `node`, `go`, ...).
    pub images: BTreeMap<String, String>,
    pub memory_mb: u64,
    pub pids: u32,
    pub cpus: f64,
    pub tmpfs_mb: u64,
    pub output_kb: u64,
    pub timeout_secs: u64,
    pub nofile: u32,
    /// Serve `python3 -m pytest` candidates from one warm test server per repair session that
    /// forks per candidate, instead of a fresh interpreter each.
    pub warm_server: bool,
    /// With `warm_server`, also serve `node --test` candidates in Docker from one warm test
    /// runner per session (coval's node images), instead of a fresh runner process each.
    #[serde(default = "yes")]
    pub warm_node: bool,
    /// Whether coval installs a project's declared dependencies into an environment of its
    /// own (`auto`), or runs tests on the image or interpreter as it is (`never`).
    #[serde(default)]
    pub install: InstallMode,
    /// Shell commands that install the project's dependencies, like a CI job's install step:
    /// run (with `sh -e`, in a copy of the project, network on) instead of the detected
    /// installs. Empty: detected from the project's manifests.
    #[serde(default)]
    pub setup: String,
    /// The user's own image (e.g. their CI image) as the base of every project's
    /// environment, instead of `images`. Empty: `images` per language.
    #[serde(default)]
    pub image: String,
    /// Where local environments and install logs live. Empty: `$XDG_CACHE_HOME/coval`, else
    /// `~/.cache/coval` (as root: `/var/cache/coval`, which the sandbox's users can read).
    #[serde(default)]
    pub cache_dir: String,
    /// Wall-clock limit of one environment build (the installer's network step).
    #[serde(default = "install_timeout")]
    pub install_timeout_secs: u64,
    /// What the sandbox's environments need from the process environment (filled by
    /// [`load`], never configured).
    #[serde(skip)]
    pub host: HostEnv,
}

/// The variables of the process environment a project environment is found or built with:
/// the user's own environment (`VIRTUAL_ENV`, `CONDA_PREFIX`), where tools and caches are
/// (`PATH`, `XDG_CACHE_HOME`, `HOME`), and what an install step needs to reach a registry
/// (proxies, index and registry URLs, the CA bundle).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostEnv {
    pub path: String,
    pub home: String,
    pub xdg_cache_home: String,
    pub virtual_env: String,
    pub conda_prefix: String,
    /// `(name, value)` of the registry-related variables that are set.
    pub registry: Vec<(String, String)>,
}

/// Variables an install step may need to reach a registry.
pub const REGISTRY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_FIND_LINKS",
    "NPM_CONFIG_REGISTRY",
    "npm_config_registry",
    "GOPROXY",
    "GONOPROXY",
    "GOPRIVATE",
    "GOINSECURE",
    "GONOSUMDB",
    "GOSUMDB",
    "SSL_CERT_FILE",
];

impl HostEnv {
    pub fn from_env(env: &[(String, String)]) -> HostEnv {
        let get = |n: &str| {
            env.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        HostEnv {
            path: get("PATH"),
            home: get("HOME"),
            xdg_cache_home: get("XDG_CACHE_HOME"),
            virtual_env: get("VIRTUAL_ENV"),
            conda_prefix: get("CONDA_PREFIX"),
            registry: REGISTRY_VARS
                .iter()
                .filter_map(|n| env.iter().find(|(k, _)| k == n).cloned())
                .collect(),
        }
    }
}

fn install_timeout() -> u64 {
    900
}

/// `sandbox.install`: whether coval installs a project's dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallMode {
    /// Build (or reuse) an environment from what the project declares.
    #[default]
    Auto,
    /// Never install: the tests run on the image or interpreter as it is.
    Never,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    pub default_model: String,
    pub server: LlmServer,
    pub models: BTreeMap<String, ModelConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmApi {
    Ollama,
    Openai,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmServer {
    pub url: String,
    pub api: LlmApi,
    pub api_key_env: String,
    pub timeout_secs: u64,
    pub auto_pull: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub model_name: String,
    pub max_tokens: u32,
    pub temperature: f64,
    pub base_capability: f64,
    pub context_window: u32,
    pub retry_attempts: u32,
}

/// The effective configuration and where each file came from.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub settings: Settings,
    pub llm: LlmSettings,
    /// The layers that were read, lowest priority first.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{origin}: cannot read: {reason}; check that the file exists and is readable, or drop --config"
    )]
    Unreadable { origin: String, reason: String },
    #[error(
        "{origin}: not valid YAML: {reason}; fix the syntax (indent with spaces, `key: value`)"
    )]
    Syntax { origin: String, reason: String },
    #[error("{origin}: unknown key `{key}`{hint}; remove it or fix its spelling")]
    UnknownKey {
        origin: String,
        key: String,
        hint: String,
    },
    #[error("{origin}: bad value for `{key}`: {reason}; {fix}")]
    BadValue {
        origin: String,
        key: String,
        reason: String,
        fix: String,
    },
}

/// Where to look and what overrides what.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config FILE`: the project settings file; `llm.config.yaml` is looked for beside it.
    pub config_file: Option<PathBuf>,
    /// The directory to search for `coval.config.yaml` and `config/coval.config.yaml`.
    pub cwd: PathBuf,
    /// The environment (injected so tests need not touch the process environment).
    pub env: Vec<(String, String)>,
    /// Flag overrides, as `section.key` = value, highest priority.
    pub overrides: Vec<(String, String)>,
}

impl LoadOptions {
    pub fn from_process(config_file: Option<PathBuf>) -> LoadOptions {
        LoadOptions {
            config_file,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            env: std::env::vars().collect(),
            overrides: vec![],
        }
    }
}

struct Layer {
    origin: String,
    value: Value,
    source: LayerSource,
}

enum LayerSource {
    Text(&'static str),
    Path(PathBuf),
    Env(config::Map<String, String>, EnvPrefix),
    Overrides(Vec<(String, String)>),
}

fn yaml_layer(origin: String, source: LayerSource) -> Result<Layer, ConfigError> {
    let builder = match &source {
        LayerSource::Text(s) => Merged::builder().add_source(File::from_str(s, FileFormat::Yaml)),
        LayerSource::Path(p) => {
            std::fs::metadata(p).map_err(|e| ConfigError::Unreadable {
                origin: origin.clone(),
                reason: e.to_string(),
            })?;
            Merged::builder().add_source(
                File::from(p.as_path())
                    .format(FileFormat::Yaml)
                    .required(true),
            )
        }
        LayerSource::Env(map, prefix) => Merged::builder().add_source(env_source(map, *prefix)),
        LayerSource::Overrides(kv) => {
            let mut b = Merged::builder();
            for (k, v) in kv {
                b = b
                    .set_override(k.as_str(), v.as_str())
                    .map_err(|e| ConfigError::BadValue {
                        origin: origin.clone(),
                        key: k.clone(),
                        reason: e.to_string(),
                        fix: "use section.key=value".into(),
                    })?;
            }
            b
        }
    };
    let value = builder
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| ConfigError::Syntax {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    Ok(Layer {
        origin,
        value,
        source,
    })
}

/// `COVAL_SECTION__KEY` for project settings (prefix `COVAL`, then `_`), `COVAL_LLM__KEY`
/// for model settings (prefix `COVAL_LLM`, then `__`).
#[derive(Clone, Copy)]
struct EnvPrefix {
    prefix: &'static str,
    separator: &'static str,
}

const SETTINGS_ENV: EnvPrefix = EnvPrefix {
    prefix: "COVAL",
    separator: "_",
};
const LLM_ENV: EnvPrefix = EnvPrefix {
    prefix: "COVAL_LLM",
    separator: "__",
};

fn env_source(map: &config::Map<String, String>, p: EnvPrefix) -> Environment {
    Environment::with_prefix(p.prefix)
        .prefix_separator(p.separator)
        .separator("__")
        .try_parsing(true)
        .source(Some(map.clone()))
}

/// Load, merge, check. Errors name the layer, the key and the fix.
pub fn load(opts: &LoadOptions) -> Result<Config, ConfigError> {
    let (settings_file, llm_file) = locate(opts)?;
    let env = |prefix: &str, skip: Option<&str>| -> config::Map<String, String> {
        opts.env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{prefix}_")) && k.contains("__"))
            .filter(|(k, _)| skip.is_none_or(|s| !k.starts_with(s)))
            .cloned()
            .collect()
    };

    let mut settings_layers = vec![yaml_layer(
        "built-in defaults (config/coval.config.yaml)".into(),
        LayerSource::Text(DEFAULT_SETTINGS),
    )?];
    if let Some(p) = &settings_file {
        settings_layers.push(yaml_layer(
            p.display().to_string(),
            LayerSource::Path(p.clone()),
        )?);
    }
    let senv = env("COVAL", Some("COVAL_LLM__"));
    if !senv.is_empty() {
        let names = senv.keys().cloned().collect::<Vec<_>>().join(", ");
        settings_layers.push(yaml_layer(
            format!("environment ({names})"),
            LayerSource::Env(senv, SETTINGS_ENV),
        )?);
    }
    let (llm_overrides, settings_overrides): (Vec<_>, Vec<_>) = opts
        .overrides
        .iter()
        .cloned()
        .partition(|(k, _)| k.starts_with("llm."));
    if !settings_overrides.is_empty() {
        settings_layers.push(yaml_layer(
            "command-line flags".into(),
            LayerSource::Overrides(settings_overrides),
        )?);
    }

    let mut llm_layers = vec![yaml_layer(
        "built-in defaults (config/llm.config.yaml)".into(),
        LayerSource::Text(DEFAULT_LLM),
    )?];
    if let Some(p) = &llm_file {
        llm_layers.push(yaml_layer(
            p.display().to_string(),
            LayerSource::Path(p.clone()),
        )?);
    }
    let lenv = env("COVAL_LLM", None);
    if !lenv.is_empty() {
        let names = lenv.keys().cloned().collect::<Vec<_>>().join(", ");
        llm_layers.push(yaml_layer(
            format!("environment ({names})"),
            LayerSource::Env(lenv, LLM_ENV),
        )?);
    }
    // The model server: COVAL_LLM_URL, else Ollama's own OLLAMA_HOST.
    let mut llm_overrides: Vec<(String, String)> = llm_overrides
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("llm.").to_owned(), v))
        .collect();
    let var = |n: &str| {
        opts.env
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    if let Some(url) = var("COVAL_LLM_URL").filter(|u| !u.is_empty()) {
        llm_overrides.insert(0, ("server.url".into(), url));
    } else if let Some(host) = var("OLLAMA_HOST").filter(|u| !u.is_empty()) {
        llm_overrides.insert(0, ("server.url".into(), ollama_host_url(&host)));
    }
    if !llm_overrides.is_empty() {
        llm_layers.push(yaml_layer(
            "command-line flags and COVAL_LLM_URL/OLLAMA_HOST".into(),
            LayerSource::Overrides(llm_overrides),
        )?);
    }

    let defaults = settings_layers[0].value.clone();
    for l in &settings_layers[1..] {
        check_keys(
            &l.value,
            &defaults,
            "",
            &l.origin,
            &["sandbox.images", "deploy.images"],
        )?;
    }
    let llm_defaults = llm_layers[0].value.clone();
    for l in &llm_layers[1..] {
        check_keys(&l.value, &llm_defaults, "", &l.origin, &["models"])?;
    }

    let mut settings: Settings = merge(&settings_layers)?;
    settings.sandbox.host = HostEnv::from_env(&opts.env);
    let llm: LlmSettings = merge(&llm_layers)?;
    validate_settings(&settings, &settings_layers)?;
    validate_llm(&llm, &llm_layers)?;
    let sources = settings_layers
        .iter()
        .chain(&llm_layers)
        .map(|l| l.origin.clone())
        .collect();
    Ok(Config {
        settings,
        llm,
        sources,
    })
}

/// `OLLAMA_HOST` may be `host`, `host:port` or a URL.
fn ollama_host_url(host: &str) -> String {
    let with_scheme = if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    };
    let after_scheme = with_scheme.split("://").nth(1).unwrap_or("");
    if after_scheme.contains(':') {
        with_scheme
    } else {
        format!("{}:11434", with_scheme.trim_end_matches('/'))
    }
}

fn locate(opts: &LoadOptions) -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let settings = match &opts.config_file {
        Some(p) => {
            if !p.is_file() {
                return Err(ConfigError::Unreadable {
                    origin: p.display().to_string(),
                    reason: "no such file".into(),
                });
            }
            Some(p.clone())
        }
        None => [
            opts.cwd.join(SETTINGS_FILE),
            opts.cwd.join("config").join(SETTINGS_FILE),
        ]
        .into_iter()
        .find(|p| p.is_file()),
    };
    let mut llm_candidates = vec![];
    if let Some(dir) = settings.as_deref().and_then(Path::parent) {
        llm_candidates.push(dir.join(LLM_FILE));
    }
    llm_candidates.push(opts.cwd.join(LLM_FILE));
    llm_candidates.push(opts.cwd.join("config").join(LLM_FILE));
    Ok((settings, llm_candidates.into_iter().find(|p| p.is_file())))
}

/// Every key of `value` must exist in `schema`; under `free` maps any key is allowed and its
/// entries are checked against the schema's first entry.
fn check_keys(
    value: &Value,
    schema: &Value,
    path: &str,
    origin: &str,
    free: &[&str],
) -> Result<(), ConfigError> {
    let (Value::Object(v), Value::Object(s)) = (value, schema) else {
        return Ok(());
    };
    let is_free = free.contains(&path);
    for (k, child) in v {
        let key = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let child_schema = if is_free { s.values().next() } else { s.get(k) };
        match child_schema {
            Some(cs) => check_keys(child, cs, &key, origin, free)?,
            None => {
                let hint = closest(k, s.keys().map(String::as_str))
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_else(|| {
                        let known: Vec<&str> = s.keys().map(String::as_str).collect();
                        format!(" (known keys here: {})", known.join(", "))
                    });
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_owned(),
                    key,
                    hint,
                });
            }
        }
    }
    Ok(())
}

fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn merge<T: DeserializeOwned>(layers: &[Layer]) -> Result<T, ConfigError> {
    let mut b = Merged::builder();
    for l in layers {
        b = match &l.source {
            LayerSource::Text(s) => b.add_source(File::from_str(s, FileFormat::Yaml)),
            LayerSource::Path(p) => b.add_source(File::from(p.as_path()).format(FileFormat::Yaml)),
            LayerSource::Env(map, prefix) => b.add_source(env_source(map, *prefix)),
            LayerSource::Overrides(kv) => {
                let mut b = b;
                for (k, v) in kv {
                    b = b.set_override(k.as_str(), v.as_str()).map_err(|e| {
                        ConfigError::BadValue {
                            origin: l.origin.clone(),
                            key: k.clone(),
                            reason: e.to_string(),
                            fix: "use section.key=value".into(),
                        }
                    })?;
                }
                b
            }
        };
    }
    let merged = b.build().map_err(|e| ConfigError::Syntax {
        origin: "merged configuration".into(),
        reason: e.to_string(),
    })?;
    merged.clone().try_deserialize::<T>().map_err(|e| {
        let (key, reason) = match &e {
            config::ConfigError::Type {
                key: Some(k),
                unexpected,
                expected,
                ..
            } => (
                k.clone(),
                format!("found {unexpected}, expected {expected}"),
            ),
            other => {
                let text = other.to_string();
                // The `config` crate names the key only inside its message (`... for key
                // `sandbox.backend``) and never the values an enum takes; serde's own message
                // for the same tree does ("unknown variant `x`, expected one of ...").
                let key = text
                    .rsplit_once("for key `")
                    .and_then(|(_, rest)| rest.split_once('`'))
                    .map(|(k, _)| k.to_owned())
                    .unwrap_or_default();
                let serde_reason = merged
                    .clone()
                    .try_deserialize::<serde_json::Value>()
                    .ok()
                    .and_then(|v| serde_json::from_value::<T>(v).err())
                    .map(|e| e.to_string())
                    .filter(|m| m.contains("unknown variant"))
                    .map(|m| m.split(" at line").next().unwrap_or(&m).to_owned());
                (key, serde_reason.unwrap_or(text))
            }
        };
        let origin = if key.is_empty() {
            "configuration".to_owned()
        } else {
            origin_of(layers, &key)
        };
        ConfigError::BadValue {
            origin,
            key,
            reason,
            fix: "see config/coval.config.yaml and config/llm.config.yaml for the expected values"
                .into(),
        }
    })
}

/// The highest-priority layer that sets `key` (a dotted path).
fn origin_of(layers: &[Layer], key: &str) -> String {
    layers
        .iter()
        .rev()
        .find(|l| {
            key.split('.')
                .try_fold(&l.value, |v, part| v.get(part))
                .is_some()
        })
        .map(|l| l.origin.clone())
        .unwrap_or_else(|| "configuration".into())
}

fn bad(layers: &[Layer], key: &str, reason: String, fix: &str) -> ConfigError {
    ConfigError::BadValue {
        origin: origin_of(layers, key),
        key: key.to_owned(),
        reason,
        fix: fix.to_owned(),
    }
}

fn validate_settings(s: &Settings, layers: &[Layer]) -> Result<(), ConfigError> {
    let b = &s.bus;
    if proto::subjects::Namespace::new(&b.namespace).is_err() {
        return Err(bad(
            layers,
            "bus.namespace",
            format!("`{}` is not a valid namespace", b.namespace),
            "use 1 to 32 lowercase letters, digits, `-` or `_`",
        ));
    }
    let positive = [
        ("bus.concurrency", b.concurrency as u64),
        ("bus.ack_wait_secs", b.ack_wait_secs),
        ("bus.max_deliver", u64::from(b.max_deliver)),
        ("bus.retry_backoff_secs", b.retry_backoff_secs),
        ("global.timeout", s.global.timeout),
        ("global.max_iterations", u64::from(s.global.max_iterations)),
        (
            "project.max_iterations",
            u64::from(s.project.max_iterations),
        ),
        ("docker.base_port", u64::from(s.docker.base_port)),
        ("sandbox.timeout_secs", s.sandbox.timeout_secs),
        ("sandbox.output_kb", s.sandbox.output_kb),
        ("sandbox.tmpfs_mb", s.sandbox.tmpfs_mb),
        ("sandbox.nofile", u64::from(s.sandbox.nofile)),
        (
            "sandbox.install_timeout_secs",
            s.sandbox.install_timeout_secs,
        ),
        ("deploy.health_timeout_secs", s.deploy.health_timeout_secs),
        ("deploy.health_interval_ms", s.deploy.health_interval_ms),
        ("deploy.memory_mb", s.deploy.memory_mb),
        ("deploy.pids", u64::from(s.deploy.pids)),
        ("deploy.max_file_kb", s.deploy.max_file_kb),
        ("deploy.max_files", s.deploy.max_files as u64),
    ];
    for (key, v) in positive {
        if v == 0 {
            return Err(bad(
                layers,
                key,
                "must be at least 1".into(),
                "set a positive number",
            ));
        }
    }
    if b.progress_interval_secs == 0 || b.progress_interval_secs >= b.ack_wait_secs {
        return Err(bad(
            layers,
            "bus.progress_interval_secs",
            format!(
                "{} must be between 1 and bus.ack_wait_secs ({}) - 1",
                b.progress_interval_secs, b.ack_wait_secs
            ),
            "make it about a third of bus.ack_wait_secs so in-progress acks arrive before redelivery",
        ));
    }
    if !(1..=5).contains(&b.replicas) {
        return Err(bad(
            layers,
            "bus.replicas",
            format!("{} is not a JetStream replica count", b.replicas),
            "use 1 on one server, or 3 (at most 5, the cluster's size at most) on a cluster",
        ));
    }
    let span = b.longest_retry_span().as_secs();
    if b.duplicate_window_secs <= span {
        return Err(bad(
            layers,
            "bus.duplicate_window_secs",
            format!(
                "{} s does not exceed the longest retry span ({span} s = max_deliver × ack_wait + backoffs)",
                b.duplicate_window_secs
            ),
            "raise it above the retry span, or lower max_deliver/ack_wait, so a retried handler's republish is always recognised as a duplicate",
        ));
    }
    let c = &s.cost_calculation;
    for (key, v) in [
        ("cost_calculation.gamma", c.gamma),
        ("cost_calculation.rebuild_threshold", c.rebuild_threshold),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(bad(
                layers,
                key,
                format!("{v} must be a positive number"),
                "e.g. 1.0",
            ));
        }
    }
    for (key, v) in [
        ("cost_calculation.min_debt", c.min_debt),
        ("cost_calculation.new_code_debt", c.new_code_debt),
        ("cost_calculation.rebuild_context", c.rebuild_context),
        ("cost_calculation.search_capability", c.search_capability),
    ] {
        if !(v > 0.0 && v <= 1.0) {
            return Err(bad(
                layers,
                key,
                format!("{v} is outside (0, 1]"),
                "use a number between 0 and 1, e.g. 0.2",
            ));
        }
    }
    let w = &c.prior;
    if ![
        w.bias,
        w.debt,
        w.coverage,
        w.context,
        w.capability,
        w.size,
        c.refit_l2,
    ]
    .iter()
    .all(|v| v.is_finite())
        || c.refit_l2 < 0.0
    {
        return Err(bad(
            layers,
            "cost_calculation.prior",
            "weights must be finite numbers and refit_l2 ≥ 0".into(),
            "see config/coval.config.yaml for the shipped weights",
        ));
    }
    if !(c.lambda.is_finite() && c.lambda >= 0.0) {
        return Err(bad(
            layers,
            "cost_calculation.lambda",
            format!("{} must be ≥ 0", c.lambda),
            "e.g. 0.5",
        ));
    }
    let sb = &s.sandbox;
    if sb.memory_mb < 16 {
        return Err(bad(
            layers,
            "sandbox.memory_mb",
            format!("{} MB is too little to run a test", sb.memory_mb),
            "use at least 16 (e.g. 512)",
        ));
    }
    if sb.pids < 8 {
        return Err(bad(
            layers,
            "sandbox.pids",
            format!("{} processes is too few to run a test", sb.pids),
            "use at least 8 (e.g. 256)",
        ));
    }
    if !(sb.cpus.is_finite() && sb.cpus > 0.0) {
        return Err(bad(
            layers,
            "sandbox.cpus",
            format!("{} must be a positive number", sb.cpus),
            "e.g. 1.0",
        ));
    }
    if s.validate.lanes > 32 {
        return Err(bad(
            layers,
            "validate.lanes",
            format!(
                "{} lanes: each is a sandbox session of its own",
                s.validate.lanes
            ),
            "use 0 (one per CPU core) or 1 to 32",
        ));
    }
    let hw = s.global.adaptive_evaluation.history_weight;
    if !(0.0..=1.0).contains(&hw) {
        return Err(bad(
            layers,
            "global.adaptive_evaluation.history_weight",
            format!("{hw} is outside 0..=1"),
            "use a weight between 0 (ignore history) and 1 (history only)",
        ));
    }
    Ok(())
}

fn validate_llm(l: &LlmSettings, layers: &[Layer]) -> Result<(), ConfigError> {
    if !l.models.contains_key(&l.default_model) {
        let known: Vec<&str> = l.models.keys().map(String::as_str).collect();
        return Err(bad(
            layers,
            "default_model",
            format!("`{}` is not a configured alias", l.default_model),
            &format!("use one of: {}", known.join(", ")),
        ));
    }
    if !(l.server.url.starts_with("http://") || l.server.url.starts_with("https://")) {
        return Err(bad(
            layers,
            "server.url",
            format!("`{}` is not an http(s) URL", l.server.url),
            "e.g. http://127.0.0.1:11434",
        ));
    }
    for (alias, m) in &l.models {
        let key = |k: &str| format!("models.{alias}.{k}");
        if !(0.0..=2.0).contains(&m.temperature) {
            return Err(bad(
                layers,
                &key("temperature"),
                format!("{} is outside 0..=2", m.temperature),
                "e.g. 0.2",
            ));
        }
        if !(m.base_capability > 0.0 && m.base_capability <= 1.0) {
            return Err(bad(
                layers,
                &key("base_capability"),
                format!("{} is outside (0, 1]", m.base_capability),
                "e.g. 0.75",
            ));
        }
        if m.context_window < 2048 || m.max_tokens == 0 || m.max_tokens >= m.context_window {
            return Err(bad(
                layers,
                &key("context_window"),
                format!(
                    "context_window {} with max_tokens {} leaves no room for the prompt",
                    m.context_window, m.max_tokens
                ),
                "use a context_window of at least 2048 and larger than max_tokens",
            ));
        }
        if m.model_name.trim().is_empty() {
            return Err(bad(
                layers,
                &key("model_name"),
                "is empty".into(),
                "e.g. qwen2.5-coder:7b",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> LoadOptions {
        LoadOptions {
            config_file: None,
            cwd: dir.to_owned(),
            env: vec![],
            overrides: vec![],
        }
    }

    #[test]
    fn defaults_load_and_ship_six_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&opts(dir.path())).unwrap();
        let aliases: Vec<&str> = c.llm.models.keys().map(String::as_str).collect();
        assert_eq!(
            aliases,
            [
                "codellama13b",
                "deepseek",
                "deepseek-r1",
                "granite",
                "mistral",
                "qwen"
            ]
        );
        assert_eq!(c.settings.cost_calculation.rebuild_threshold, 1.5);
        assert_eq!(c.llm.server.url, "http://127.0.0.1:11434");
        assert!(c.settings.bus.duplicate_window() > c.settings.bus.longest_retry_span());
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            "docker:\n  base_port: 9000\nproject:\n  name: shop\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(LLM_FILE), "default_model: mistral\n").unwrap();
        let mut o = opts(dir.path());
        o.env = vec![
            ("COVAL_DOCKER__BASE_PORT".into(), "9100".into()),
            ("COVAL_LLM__MODELS__QWEN__TEMPERATURE".into(), "0.05".into()),
            ("COVAL_LLM_URL".into(), "http://127.0.0.1:18080".into()),
            ("COVAL_WORKSPACE".into(), "/elsewhere".into()),
        ];
        let c = load(&o).unwrap();
        assert_eq!(c.settings.docker.base_port, 9100);
        assert_eq!(c.settings.project.name, "shop");
        assert_eq!(c.llm.default_model, "mistral");
        assert_eq!(c.llm.models["qwen"].temperature, 0.05);
        assert_eq!(c.llm.server.url, "http://127.0.0.1:18080");
        o.overrides = vec![("docker.base_port".into(), "9200".into())];
        assert_eq!(load(&o).unwrap().settings.docker.base_port, 9200);
    }

    #[test]
    fn sandbox_section_loads_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&opts(dir.path())).unwrap();
        assert_eq!(c.settings.sandbox.backend, SandboxBackend::Auto);
        assert_eq!(c.settings.sandbox.images["python"], "coval/python:bookworm");
        assert_eq!(c.settings.sandbox.runtime, "");
        let mut o = opts(dir.path());
        o.env = vec![
            ("COVAL_SANDBOX__BACKEND".into(), "local".into()),
            ("COVAL_SANDBOX__MEMORY_MB".into(), "128".into()),
        ];
        let c = load(&o).unwrap();
        assert_eq!(c.settings.sandbox.backend, SandboxBackend::Local);
        assert_eq!(c.settings.sandbox.memory_mb, 128);
        let f = dir.path().join(SETTINGS_FILE);
        std::fs::write(&f, "sandbox:\n  images:\n    rust: coval/rust:bookworm\n").unwrap();
        let c = load(&opts(dir.path())).unwrap();
        assert_eq!(c.settings.sandbox.images["rust"], "coval/rust:bookworm");
        assert_eq!(c.settings.sandbox.images["python"], "coval/python:bookworm");
        std::fs::write(&f, "sandbox:\n  cpus: 0\n").unwrap();
        let e = load(&opts(dir.path())).unwrap_err().to_string();
        assert!(e.contains("sandbox.cpus"), "{e}");
        std::fs::write(&f, "sandbox:\n  backend: podman\n").unwrap();
        assert!(load(&opts(dir.path())).is_err());
        std::fs::write(&f, "sandbox:\n  memroy_mb: 1\n").unwrap();
        let e = load(&opts(dir.path())).unwrap_err().to_string();
        assert!(e.contains("did you mean `memory_mb`"), "{e}");
    }

    #[test]
    fn ollama_host_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.env = vec![("OLLAMA_HOST".into(), "127.0.0.2".into())];
        assert_eq!(load(&o).unwrap().llm.server.url, "http://127.0.0.2:11434");
        assert_eq!(ollama_host_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn errors_name_file_key_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(SETTINGS_FILE);
        std::fs::write(&f, "docker:\n  base_prot: 9000\n").unwrap();
        let e = load(&opts(dir.path())).unwrap_err().to_string();
        assert!(e.contains(&f.display().to_string()), "{e}");
        assert!(
            e.contains("docker.base_prot") && e.contains("did you mean `base_port`"),
            "{e}"
        );

        std::fs::write(&f, "docker:\n  base_port: [not, a, port\n").unwrap();
        let e = load(&opts(dir.path())).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");

        std::fs::write(&f, "docker:\n  base_port: lots\n").unwrap();
        let e = load(&opts(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("docker.base_port") && e.contains(&f.display().to_string()),
            "{e}"
        );

        std::fs::write(&f, "bus:\n  duplicate_window_secs: 60\n").unwrap();
        let e = load(&opts(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("bus.duplicate_window_secs") && e.contains("retry span"),
            "{e}"
        );

        std::fs::write(&f, "").unwrap();
        let mut o = opts(dir.path());
        o.env = vec![("COVAL_DOCKER__NOPE".into(), "1".into())];
        let e = load(&o).unwrap_err().to_string();
        assert!(
            e.contains("COVAL_DOCKER__NOPE") && e.contains("docker.nope"),
            "{e}"
        );

        // A value an enum does not take names the variable, the key and the values it takes.
        let mut o = opts(dir.path());
        o.env = vec![("COVAL_SANDBOX__BACKEND".into(), "bogus".into())];
        let e = load(&o).unwrap_err().to_string();
        assert!(
            e.contains("COVAL_SANDBOX__BACKEND")
                && e.contains("`sandbox.backend`")
                && e.contains("bogus")
                && ["auto", "docker", "local"].iter().all(|v| e.contains(v)),
            "{e}"
        );

        std::fs::write(
            dir.path().join(LLM_FILE),
            "models:\n  qwen:\n    temperature: 7\n",
        )
        .unwrap();
        let e = load(&opts(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("models.qwen.temperature") && e.contains(LLM_FILE),
            "{e}"
        );

        let mut o = opts(dir.path());
        o.config_file = Some(dir.path().join("missing.yaml"));
        assert!(matches!(load(&o), Err(ConfigError::Unreadable { .. })));
    }
}
