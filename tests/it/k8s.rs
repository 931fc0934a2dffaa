//! The Kubernetes manifests of `deploy/k8s`: validated offline and strictly (an unknown field
//! is an error) against the Kubernetes JSON schemas of a pinned version with the PyPI package
//! kubernetes-validate (`scripts/test.sh` installs it into `.dev/venv`), the KEDA ScaledObject
//! against `deploy/k8s/keda-scaledobject.schema.json`; and checked against the code they run:
//! every Deployment runs its stage binary and every flag it passes is in that binary's `--help`, every variable is one the
//! binary reads, the ConfigMaps hold the repository's files, the names match what proto says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use coval_tests::{repo_root, workspace_binary};
use serde_json::Value;

/// The Kubernetes version the manifests are validated against: the oldest whose API has
/// everything they use as GA (StatefulSet `spec.ordinals`, GA in 1.31).
const KUBERNETES: &str = "1.31.0";
/// The validator's version, as `scripts/test.sh` installs it.
const KUBERNETES_VALIDATE: &str = "1.37.0";

fn k8s_dir() -> PathBuf {
    repo_root().join("deploy/k8s")
}

/// The Python of `.dev/venv` (or `$COVAL_DEV_DIR/venv`), with kubernetes-validate in it.
fn python() -> Result<PathBuf> {
    let dev = std::env::var_os("COVAL_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".dev"));
    let py = dev.join("venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import kubernetes_validate"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ensure!(
        ok,
        "{} cannot import kubernetes_validate: run scripts/test.sh (it installs it), or \
         `{} -m pip install kubernetes-validate=={KUBERNETES_VALIDATE}`",
        py.display(),
        py.display()
    );
    Ok(py)
}

/// What `tests/k8s/validate.py` says of `files`: its exit code and one entry per resource.
fn validate(files: &[PathBuf]) -> Result<(i32, Vec<Value>)> {
    let crds = tempfile::NamedTempFile::new()?;
    std::fs::write(
        crds.path(),
        serde_json::json!({
            "keda.sh/v1alpha1/ScaledObject": k8s_dir().join("keda-scaledobject.schema.json"),
        })
        .to_string(),
    )?;
    let out = Command::new(python()?)
        .arg(repo_root().join("tests/k8s/validate.py"))
        .arg(KUBERNETES)
        .arg(crds.path())
        .args(files)
        .output()?;
    let code = out.status.code().unwrap_or(-1);
    ensure!(
        code == 0 || code == 1,
        "validate.py failed ({code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).context("validate.py output")?;
    let resources = v["resources"].as_array().cloned().unwrap_or_default();
    Ok((code, resources))
}

/// The files kustomization.yaml lists (each a `  - file.yaml` line under `resources:`).
fn kustomized() -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(k8s_dir().join("kustomization.yaml"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|f| k8s_dir().join(f.trim()))
        .collect())
}

/// Every resource of the manifests, validated (once per test process); fails on any error.
fn manifests() -> Result<Vec<Value>> {
    static DOCS: std::sync::OnceLock<Result<Vec<Value>, String>> = std::sync::OnceLock::new();
    DOCS.get_or_init(|| validated().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn validated() -> Result<Vec<Value>> {
    let (code, resources) = validate(&kustomized()?)?;
    let errors: Vec<String> = resources
        .iter()
        .filter(|r| !r["error"].is_null())
        .map(|r| format!("{} {} {}: {}", r["file"], r["kind"], r["name"], r["error"]))
        .collect();
    ensure!(
        code == 0 && errors.is_empty(),
        "Kubernetes {KUBERNETES}:\n{}",
        errors.join("\n")
    );
    Ok(resources.into_iter().map(|r| r["doc"].clone()).collect())
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name}"))
}

#[test]
fn every_manifest_validates_strictly_and_kustomization_lists_every_file() -> Result<()> {
    let listed: BTreeSet<PathBuf> = kustomized()?.into_iter().collect();
    let on_disk: BTreeSet<PathBuf> = std::fs::read_dir(k8s_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    ensure!(
        listed == on_disk,
        "kustomization.yaml lists {listed:?}, the directory has {on_disk:?}"
    );
    let script = std::fs::read_to_string(repo_root().join("scripts/test.sh"))?;
    ensure!(
        script.contains(&format!(
            "KUBERNETES_VALIDATE_VERSION={KUBERNETES_VALIDATE}"
        )),
        "scripts/test.sh installs another kubernetes-validate than {KUBERNETES_VALIDATE}"
    );
    let docs = manifests()?;
    let deployments: BTreeSet<String> = of_kind(&docs, "Deployment")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let stages: BTreeSet<String> = crate::workers::STAGES
        .iter()
        .map(|s| format!("coval-{s}"))
        .collect();
    ensure!(
        deployments == stages,
        "a Deployment per stage: {deployments:?}"
    );
    for kind in ["StatefulSet", "ScaledObject", "PersistentVolumeClaim"] {
        ensure!(of_kind(&docs, kind).len() == 1, "one {kind}");
    }
    Ok(())
}

/// Each edit breaks one manifest the way a person might; the validation must say where.
#[test]
fn a_misspelt_field_a_wrong_type_or_an_unknown_kind_fails_validation() -> Result<()> {
    let workers = std::fs::read_to_string(k8s_dir().join("workers.yaml"))?;
    let keda = std::fs::read_to_string(k8s_dir().join("keda.yaml"))?;
    let cases: [(&str, &str, &str, &str, &str); 7] = [
        (
            "workers.yaml",
            "readinessProbe:",
            "readinesProbe:",
            "readinesProbe",
            "a misspelt field",
        ),
        (
            "workers.yaml",
            "replicas: 2",
            "replicas: two",
            "replicas",
            "a string for an integer",
        ),
        (
            "workers.yaml",
            "containerPort: 8080",
            "containerPort: [8080]",
            "containerPort",
            "a list for an integer",
        ),
        (
            "workers.yaml",
            "kind: Deployment",
            "kind: Deploymnet",
            "no schema",
            "an unknown kind",
        ),
        (
            "workers.yaml",
            "      automountServiceAccountToken: false\n",
            "      automountServiceAccountToken: false\n      automountServiceAccountToken: true\n",
            "duplicate key",
            "a key given twice",
        ),
        (
            "keda.yaml",
            "lagThreshold: \"4\"",
            "lagTreshold: \"4\"",
            "lagTreshold",
            "a misspelt KEDA trigger parameter",
        ),
        (
            "keda.yaml",
            "minReplicaCount: 1",
            "minReplicaCount: \"1\"",
            "minReplicaCount",
            "a string for a KEDA integer",
        ),
    ];
    // One broken copy per case, validated in one run.
    let dir = tempfile::tempdir()?;
    let mut files = vec![];
    for (i, (file, from, to, _, _)) in cases.iter().enumerate() {
        let text = if *file == "keda.yaml" {
            &keda
        } else {
            &workers
        };
        ensure!(text.contains(from), "{file} no longer has {from:?}");
        let broken = dir.path().join(format!("{i}-{file}"));
        std::fs::write(&broken, text.replacen(from, to, 1))?;
        files.push(broken);
    }
    let (code, resources) = validate(&files)?;
    ensure!(code == 1, "broken manifests passed: exit {code}");
    for ((_, from, to, says, what), file) in cases.iter().zip(&files) {
        let errors: Vec<&str> = resources
            .iter()
            .filter(|r| r["file"].as_str() == file.to_str())
            .filter_map(|r| r["error"].as_str())
            .collect();
        ensure!(
            errors.iter().any(|e| e.contains(says)),
            "{what} ({from:?} -> {to:?}) passed: errors {errors:?}"
        );
    }
    Ok(())
}

#[test]
fn the_configmaps_hold_the_repositorys_config_files_byte_for_byte() -> Result<()> {
    let docs = manifests()?;
    let root = repo_root();
    for (map, key, file) in [
        (
            "coval-config",
            "coval.config.yaml",
            "config/coval.config.yaml",
        ),
        (
            "coval-llm-config",
            "llm.config.yaml",
            "config/llm.config.yaml",
        ),
        ("nats-config", "nats.conf", "deploy/nats/cluster.conf"),
    ] {
        let got = named(&docs, "ConfigMap", map)?["data"][key]
            .as_str()
            .with_context(|| format!("{map} has no {key}"))?;
        let want = std::fs::read_to_string(root.join(file))?;
        ensure!(
            got == want,
            "ConfigMap {map} differs from {file}: copy the file into deploy/k8s again"
        );
    }
    Ok(())
}

/// Every Deployment runs its stage's binary (`coval-<stage>`, the worker image's), every flag
/// it passes exists in that binary's `--help`, every variable it sets is one the binary reads
/// (a flag's `[env: ...]` or a `COVAL_<SECTION>__<KEY>` that `coval config` applies), and the
/// probes ask the `--health` port.
#[test]
fn every_deployment_runs_flags_and_variables_the_binary_has() -> Result<()> {
    let docs = manifests()?;
    let coval = workspace_binary("coval")?;
    for d in of_kind(&docs, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let strings = |key: &str| -> Result<Vec<&str>> {
            Ok(c[key]
                .as_array()
                .with_context(|| format!("{name}: no {key}"))?
                .iter()
                .filter_map(Value::as_str)
                .collect())
        };
        let (command, args) = (strings("command")?, strings("args")?);
        ensure!(
            command.len() == 1 && command[0] == name,
            "{name}: runs {command:?}, not its stage binary {name}"
        );
        let help = Command::new(workspace_binary(name)?)
            .arg("--help")
            .output()?;
        let help = String::from_utf8(help.stdout)?;
        ensure!(help.contains("--health"), "{help}");
        for flag in args.iter().filter(|a| a.starts_with('-')) {
            let flag = flag.split('=').next().unwrap_or_default();
            ensure!(
                help.contains(&format!("{flag} ")),
                "{name}: {flag} is not in `{name} --help`:\n{help}"
            );
        }
        // The probes ask the port --health listens on.
        let health = args
            .iter()
            .position(|a| *a == "--health")
            .and_then(|i| args.get(i + 1))
            .with_context(|| format!("{name}: no --health"))?;
        let port: u64 = health.rsplit(':').next().unwrap_or_default().parse()?;
        let ports = c["ports"].as_array().context("ports")?;
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
            let get = &c[probe]["httpGet"];
            ensure!(get["path"] == path, "{name}: {probe} asks {}", get["path"]);
            let p = ports
                .iter()
                .find(|p| p["name"] == get["port"])
                .with_context(|| format!("{name}: {probe} port {}", get["port"]))?;
            ensure!(
                p["containerPort"] == port,
                "{name}: {probe} port is not --health's"
            );
        }
        // Variables: a flag's env, or a configuration key `coval config` applies.
        let mut overrides = BTreeMap::new();
        for e in c["env"].as_array().context("env")? {
            let var = e["name"].as_str().unwrap_or_default();
            if let Some(key) = var.strip_prefix("COVAL_").filter(|k| k.contains("__")) {
                overrides.insert(var.to_owned(), (key.to_lowercase(), e["value"].clone()));
            } else {
                ensure!(
                    help.contains(&format!("[env: {var}")),
                    "{name}: {var} is read by no flag of `{name}`"
                );
            }
        }
        let out = Command::new(&coval)
            .args(["config", "--json"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(
                overrides
                    .iter()
                    .map(|(k, (_, v))| (k.as_str(), v.as_str().unwrap_or_default().to_owned())),
            )
            .output()?;
        ensure!(
            out.status.success(),
            "{name}: coval config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config: Value = serde_json::from_slice(&out.stdout)?;
        for (var, (key, want)) in &overrides {
            let mut at = &config["settings"];
            for part in key.split("__") {
                at = &at[part];
            }
            let got = match at {
                Value::String(s) => s.clone(),
                Value::Null => bail!("{name}: {var} names no configuration key"),
                v => v.to_string(),
            };
            ensure!(
                Some(got.as_str()) == want.as_str(),
                "{name}: {var}={want} reads as {got}"
            );
        }
    }
    Ok(())
}

/// The names the manifests use are those the code and deploy/nats/cluster.conf use.
#[test]
fn the_manifests_name_what_the_code_and_the_cluster_file_name() -> Result<()> {
    let docs = manifests()?;
    // KEDA scales the validation Deployment on the validation consumer of the work stream.
    let so = named(&docs, "ScaledObject", "coval-validate")?;
    named(
        &docs,
        "Deployment",
        so["spec"]["scaleTargetRef"]["name"].as_str().unwrap_or(""),
    )?;
    let meta = &so["spec"]["triggers"][0]["metadata"];
    let ns = proto::subjects::Namespace::new("coval")?;
    ensure!(
        meta["stream"] == ns.work_stream(proto::Stage::Validate).as_str(),
        "{meta}"
    );
    ensure!(
        meta["consumer"] == ns.consumer(proto::Stage::Validate).as_str(),
        "{meta}"
    );
    // The StatefulSet's pods are the route hosts of cluster.conf, each behind a Service of
    // that name; the workers' NATS_URL names them.
    let conf = std::fs::read_to_string(repo_root().join("deploy/nats/cluster.conf"))?;
    let routes: BTreeSet<String> = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nats-route://"))
        .filter_map(|h| h.split(':').next().map(str::to_owned))
        .collect();
    let sts = named(&docs, "StatefulSet", "nats")?;
    let start = sts["spec"]["ordinals"]["start"].as_u64().unwrap_or(0);
    let n = sts["spec"]["replicas"].as_u64().unwrap_or(0);
    let pods: BTreeSet<String> = (start..start + n).map(|i| format!("nats-{i}")).collect();
    ensure!(pods == routes, "pods {pods:?}, routes {routes:?}");
    for pod in &pods {
        let svc = named(&docs, "Service", pod)?;
        ensure!(
            svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == pod.as_str(),
            "Service {pod} selects {}",
            svc["spec"]["selector"]
        );
    }
    for d in of_kind(&docs, "Deployment") {
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .context("env")?;
        let url = env
            .iter()
            .find(|e| e["name"] == "NATS_URL")
            .and_then(|e| e["value"].as_str())
            .context("NATS_URL")?;
        let hosts: BTreeSet<String> = url
            .split(',')
            .filter_map(|u| u.strip_prefix("nats://")?.split(':').next())
            .map(str::to_owned)
            .collect();
        ensure!(hosts == pods, "{}: NATS_URL {url}", d["metadata"]["name"]);
    }
    // The integration worker holds the ledger: one copy, replaced (not rolled), on a claim.
    let integrate = named(&docs, "Deployment", "coval-integrate")?;
    ensure!(integrate["spec"]["replicas"] == 1);
    ensure!(integrate["spec"]["strategy"]["type"] == "Recreate");
    let claim = integrate["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .context("the integration worker has no PersistentVolumeClaim")?;
    named(&docs, "PersistentVolumeClaim", claim)?;
    Ok(())
}
