//! `coval generate` against the model protocol server, and `coval run` / `coval stop` for
//! real on the Docker engine: health, a blue-green switch under continuous loopback requests,
//! rollback of a broken iteration, removal of every container.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llm::testing::{ProtocolServer, Reply};

use super::{coval, text};

/// `None` (the test is skipped, loudly) only when the run asked for no Docker.
fn docker_images() -> Option<()> {
    if std::env::var("COVAL_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("COVAL_SKIP_DOCKER=1: skipping a Docker deploy test");
        return None;
    }
    coval_tests::ensure_base_image("python-web").expect("python-web base image");
    coval_tests::ensure_base_image("node-web").expect("node-web base image");
    Some(())
}

/// A project name of its own, so containers never collide with other tests or users.
fn project() -> String {
    format!(
        "it-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

struct Ws {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl Ws {
    fn new(llm_url: &str) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        Ws {
            _dir: dir,
            root,
            env: vec![
                ("COVAL_LLM_URL".into(), llm_url.into()),
                ("COVAL_PROJECT__NAME".into(), project()),
                ("COVAL_SANDBOX__BACKEND".into(), "docker".into()),
                ("COVAL_DEPLOY__HEALTH_TIMEOUT_SECS".into(), "30".into()),
                ("COVAL_DEPLOY__DRAIN_SECS".into(), "5".into()),
            ],
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut all = vec!["--workspace", ".coval"];
        all.extend_from_slice(args);
        coval(&self.root, &all, &env)
    }

    fn iteration(&self, id: &str) -> std::path::PathBuf {
        self.root.join(".coval/iterations").join(id)
    }

    fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Stops this workspace's deployments even when an assertion failed, and removes the images
/// its runs built.
struct StopOnDrop<'a>(&'a Ws);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["stop"]);
        let project = &self.0.env[1].1;
        let out = std::process::Command::new("docker")
            .args(["images", "-q", "--filter"])
            .arg(format!("label=dev.coval.deploy={project}"))
            .output();
        if let Ok(out) = out {
            for id in text(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rmi", "-f", id])
                    .output();
            }
        }
    }
}

const MAIN_V1: &str = r#""""a-todo-api: a FastAPI service with todos."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="a-todo-api")
todos = {}


class TodoIn(BaseModel):
    title: str


@app.get("/health")
def health():
    return {"status": "ok"}


@app.get("/")
def index():
    return {"service": "a-todo-api", "version": 1}


@app.post("/todos", status_code=201)
def create(todo: TodoIn):
    tid = len(todos) + 1
    todos[tid] = {"id": tid, "title": todo.title, "done": False}
    return todos[tid]


@app.get("/todos")
def list_todos():
    return list(todos.values())


@app.post("/todos/{tid}/done")
def mark_done(tid: int):
    if tid not in todos:
        raise HTTPException(status_code=404, detail="no such todo")
    todos[tid]["done"] = True
    return todos[tid]
"#;

const TEST_V1: &str = r#"from fastapi.testclient import TestClient

from main import app

client = TestClient(app)


def test_health():
    assert client.get("/health").json() == {"status": "ok"}


def test_create_and_list():
    r = client.post("/todos", json={"title": "milk"})
    assert r.status_code == 201
    assert any(t["title"] == "milk" for t in client.get("/todos").json())


def test_mark_done():
    tid = client.post("/todos", json={"title": "bread"}).json()["id"]
    assert client.post(f"/todos/{tid}/done").json()["done"] is True
    assert client.post("/todos/999/done").status_code == 404
"#;

/// A model-style answer: reasoning, prose, a fenced JSON document whose main.py is itself
/// wrapped in a fence (the cleaner must remove it).
fn features_answer() -> String {
    let doc = serde_json::json!({"files": [
        {"path": "main.py", "content": format!("```python\n{MAIN_V1}```\n")},
        {"path": "test_main.py", "content": TEST_V1},
    ]});
    format!(
        "<think>\nTwo features: a todo list and marking items done. In-memory store.\n</think>\nHere is the app with both features.\n\n```json\n{}\n```\n\nRun the tests with pytest.\n",
        serde_json::to_string_pretty(&doc).unwrap()
    )
}

/// A unified diff that bumps the version `/` reports.
fn version_diff(from: u32, to: u32) -> String {
    let line = MAIN_V1
        .lines()
        .position(|l| l.contains("\"version\": 1"))
        .unwrap()
        + 1;
    format!(
        "Bumping the version.\n```diff\n--- a/main.py\n+++ b/main.py\n@@ -{line},1 +{line},1 @@\n-    return {{\"service\": \"a-todo-api\", \"version\": {from}}}\n+    return {{\"service\": \"a-todo-api\", \"version\": {to}}}\n```\n"
    )
}

fn model(server: &ProtocolServer, answer: &str) {
    server.push("/api/tags", Reply::ollama_tags(&["qwen2.5-coder:7b"]));
    server.push("/api/chat", Reply::ollama_chat(answer));
}

fn generate(ws: &Ws, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut args = vec!["generate", "--json", "--model", "qwen"];
    args.extend_from_slice(extra);
    let out = ws.run(&args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

#[test]
fn generate_writes_features_cleanly_and_records_the_parent() {
    if docker_images().is_none() {
        return;
    }
    let server = ProtocolServer::start().unwrap();
    let ws = Ws::new(&server.url());
    model(&server, &features_answer());
    let (out, v) = generate(
        &ws,
        &[
            "-d",
            "A todo API",
            "-f",
            "fastapi",
            "-l",
            "python",
            "--features",
            "create and list todos",
            "--features",
            "mark a todo done",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}\n{v:#}", text(&out.stderr));
    let g = &v["generated"];
    assert_eq!(g["iteration"], "iter-001");
    assert_eq!(g["framework"], "fastapi");
    assert_eq!(g["tests"]["passed"], true, "{g:#}");
    assert!(
        g["tests"]["sandbox"]
            .as_str()
            .unwrap()
            .starts_with("docker")
    );
    assert_eq!(g["tests"]["passed_tests"], 3, "{g:#}");
    let main = std::fs::read_to_string(ws.iteration("iter-001").join("main.py")).unwrap();
    assert_eq!(main, MAIN_V1, "the fence around main.py was not cleaned");
    for f in ["Dockerfile", "requirements.txt", "test_main.py"] {
        assert!(ws.iteration("iter-001").join(f).is_file(), "{f}");
    }
    // The prompt carried the description, both features and the template's files as data.
    let chat = server.requests_to("/api/chat")[0].json().to_string();
    for needle in [
        "A todo API",
        "create and list todos",
        "mark a todo done",
        "<data-",
        "/health",
    ] {
        assert!(chat.contains(needle), "the prompt lacks {needle}");
    }

    // A change to it: the parent's files go to the model, the diff comes back, the new
    // iteration records its parent.
    model(&server, &version_diff(1, 2));
    let (out, v) = generate(&ws, &["-d", "report version 2", "--parent", "iter-001"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{v:#}", text(&out.stderr));
    assert_eq!(v["generated"]["parent"], "iter-001");
    assert_eq!(
        v["generated"]["model_files"],
        serde_json::json!(["main.py"])
    );
    let main2 = std::fs::read_to_string(ws.iteration("iter-002").join("main.py")).unwrap();
    assert!(main2.contains("\"version\": 2") && !main2.contains("\"version\": 1"));
    let chat = server.requests_to("/api/chat")[1].json().to_string();
    assert!(
        chat.contains("mark_done"),
        "the parent's files were not shown"
    );
    let s = ws.status();
    let its = s["iterations"].as_array().unwrap();
    assert_eq!(its.len(), 2);
    assert_eq!(its[1]["parent"], "iter-001");
    assert_eq!(its[1]["origin"]["generate"], "report version 2");
}

#[test]
fn generate_refuses_malicious_answers_with_reasons() {
    let server = ProtocolServer::start().unwrap();
    let ws = Ws::new(&server.url());
    let outside = ws.root.join("escaped.py");
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"files": [{"path": "main.py", "content": "x = 1\n"}, {"path": "../../escaped.py", "content": "import os\n"}]}"#.into(),
            "leaves the project",
        ),
        (
            r#"{"files": [{"path": "/etc/cron.d/coval", "content": "* * * * * root sh\n"}]}"#.into(),
            "absolute",
        ),
        (
            "```diff\ndiff --git a/data b/data\nnew file mode 120000\n--- /dev/null\n+++ b/data\n@@ -0,0 +1 @@\n+/etc/passwd\n```\n".into(),
            "symlink",
        ),
        (
            format!(
                r#"{{"files": [{{"path": "big.py", "content": "{}"}}]}}"#,
                "# padding\\n".repeat(40_000)
            ),
            "too large",
        ),
        (
            r##"{"files": [{"path": ".git/hooks/post-checkout", "content": "#!/bin/sh\n"}]}"##.into(),
            ".git",
        ),
    ];
    for (answer, why) in &cases {
        model(&server, answer);
        let (out, _) = generate(&ws, &["-d", "A todo API", "-f", "fastapi"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{why}: {err}");
        assert!(err.contains("refused") && err.contains(why), "{why}: {err}");
    }
    assert!(
        !outside.exists(),
        "a file was written outside the iteration"
    );
    let s = ws.status();
    assert_eq!(
        s["iterations"].as_array().unwrap().len(),
        0,
        "a refused answer must not become an iteration: {s:#}"
    );
    let iters = ws.root.join(".coval/iterations");
    let left: Vec<_> = std::fs::read_dir(&iters)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

#[test]
fn every_template_alone_passes_its_tests_in_the_sandbox_and_express_deploys() {
    if docker_images().is_none() {
        return;
    }
    // No model server: the template alone, and the command says so.
    let ws = Ws::new("http://127.0.0.1:9");
    let _stop = StopOnDrop(&ws);
    for (i, fw) in ["fastapi", "flask", "express"].iter().enumerate() {
        let out = ws.run(&["generate", "-d", "shop", "-f", fw]);
        let s = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{fw}: {s}\n{}",
            text(&out.stderr)
        );
        assert!(
            s.contains("template only") && s.contains("no model server"),
            "{s}"
        );
        assert!(s.contains("passed (2 passed, 0 failed)"), "{fw}: {s}");
        assert!(s.contains(&format!("iter-00{}", i + 1)), "{s}");
    }
    // With --model, an unreachable server is an error (exit 3), not a silent template.
    let out = ws.run(&["generate", "-d", "shop", "--model", "qwen"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = ws.run(&["generate", "-d", "shop", "-f", "django"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ws.run(&["generate", "-d", "shop", "-f", "express", "-l", "python"]);
    assert_eq!(out.status.code(), Some(2));

    let port = coval_tests::free_port().unwrap();
    let p = port.to_string();
    let out = ws.run(&["run", "-i", "iter-003", "-p", &p, "--strategy", "copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (code, body) = get(port, "/").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"service\":\"shop\""), "{body}");
}

/// One request on a fresh loopback connection: status and body.
fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {out:?}"))?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((code, body))
}

/// Requests in a loop until stopped: (requests, failures, versions seen in order).
fn client(
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>, Vec<u64>)> {
    std::thread::spawn(move || {
        let (mut n, mut failures, mut versions) = (0, vec![], vec![]);
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            match get(port, "/") {
                Ok((200, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if let Some(ver) = v["version"].as_u64()
                        && versions.last() != Some(&ver)
                    {
                        versions.push(ver);
                    }
                }
                Ok((code, body)) => failures.push(format!("{code}: {body}")),
                Err(e) => failures.push(e),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (n, failures, versions)
    })
}

fn containers(project: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=dev.coval.deploy={project}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn deploy_switches_blue_green_without_losing_a_request_rolls_back_and_stops() {
    if docker_images().is_none() {
        return;
    }
    let server = ProtocolServer::start().unwrap();
    let ws = Ws::new(&server.url());
    let project = ws.env[1].1.clone();
    let _stop = StopOnDrop(&ws);
    model(&server, &features_answer());
    let (out, _) = generate(&ws, &["-d", "A todo API", "-f", "fastapi"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    model(&server, &version_diff(1, 2));
    let (out, _) = generate(&ws, &["-d", "version 2", "--parent", "iter-001"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A broken version: it crashes at start (its tests fail too, so generate says so).
    let broken = serde_json::json!({"files": [{"path": "main.py", "content":
        "import os\n\nDATABASE = os.environ[\"DATABASE_URL\"]\n\nfrom fastapi import FastAPI\n\napp = FastAPI()\n"}]})
    .to_string();
    model(&server, &broken);
    let (out, v) = generate(&ws, &["-d", "needs a database", "--parent", "iter-002"]);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(v["generated"]["tests"]["passed"], false);

    // v1 serves and answers /health.
    let port = coval_tests::free_port().unwrap();
    let p = port.to_string();
    let out = ws.run(&[
        "run",
        "-i",
        "iter-001",
        "-p",
        &p,
        "--strategy",
        "copy",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(d["deployed"]["seconds_to_healthy"].as_f64().unwrap() > 0.0);
    assert_eq!(
        get(port, "/health").unwrap(),
        (200, "{\"status\":\"ok\"}".into())
    );

    // Blue-green to v2 (overlay: v1's image, main.py mounted over it) under continuous load.
    let stop = Arc::new(AtomicBool::new(false));
    let load = client(port, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let out = ws.run(&["run", "-i", "iter-002", "-p", &p, "--strategy", "overlay"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (n, failures, versions) = load.join().unwrap();
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", text(&out.stderr));
    assert!(
        said.contains("overlay strategy") && said.contains("1 changed file(s)"),
        "{said}"
    );
    assert!(
        failures.is_empty(),
        "{} of {n} requests failed: {failures:?}",
        failures.len()
    );
    assert_eq!(versions, [1, 2], "{n} requests saw versions {versions:?}");
    assert!(n > 20, "only {n} requests were made");

    // The broken one never becomes healthy: removed, v2 keeps serving, exit 1.
    let out = ws.run(&["run", "-i", "iter-003", "-p", &p]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rolled back") && err.contains("iter-002 keeps serving"),
        "{err}"
    );
    assert!(
        err.contains("DATABASE_URL"),
        "the app's own output is missing: {err}"
    );
    let (code, body) = get(port, "/").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"version\":2"), "{body}");
    assert!(!containers(&project).iter().any(|c| c.contains("iter-003")));

    // Status shows the one deployment and its health; stop removes every container.
    let deadline = Instant::now() + Duration::from_secs(15);
    let dep = loop {
        let s = ws.status();
        let deps = s["deployments"].as_array().unwrap().clone();
        assert_eq!(deps.len(), 1, "{s:#}");
        if deps[0]["health"] == "healthy" || Instant::now() > deadline {
            break deps[0].clone();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(dep["iteration"], "iter-002");
    assert_eq!(dep["health"], "healthy", "{dep:#}");
    assert_eq!(dep["serving"], true);
    let out = ws.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        containers(&project).is_empty(),
        "{:?}",
        containers(&project)
    );
    assert!(
        get(port, "/health").is_err(),
        "the stable port still answers"
    );
    let s = ws.status();
    assert_eq!(s["deployments"], serde_json::json!([]));
}

#[test]
fn run_and_stop_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = coval(dir.path(), &["run"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no workspace"));
    let out = coval(dir.path(), &["run", "--strategy", "teleport"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = coval(dir.path(), &["stop", "-i", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let help = text(&coval(dir.path(), &["run", "--help"], &[]).stdout);
    for f in ["--iteration", "--port", "--strategy", "overlay", "symlink"] {
        assert!(help.contains(f), "{help}");
    }
    let help = text(&coval(dir.path(), &["--help"], &[]).stdout);
    assert!(help.contains("generate") && help.contains("stop") && !help.contains("proxy"));
    let _ = Path::new(".");
}

#[test]
fn repair_deploy_puts_the_repaired_iteration_behind_the_stable_port() {
    if docker_images().is_none() {
        return;
    }
    let ws = Ws::new("http://127.0.0.1:9");
    let project = ws.env[1].1.clone();
    let _stop = StopOnDrop(&ws);
    let src = ws.root.join("shop");
    std::fs::create_dir_all(&src).unwrap();
    let files = [
        ("requirements.txt", "fastapi\nuvicorn\nhttpx\npytest\n"),
        (
            "main.py",
            "from fastapi import FastAPI\n\napp = FastAPI()\n\n\ndef discounted(total, quantity):\n    \"\"\"Ten or more units earn 10% off.\"\"\"\n    if quantity > 10:\n        return total * 0.9\n    return total\n\n\n@app.get(\"/health\")\ndef health():\n    return {\"status\": \"ok\"}\n\n\n@app.get(\"/price\")\ndef price(total: float, quantity: int):\n    return {\"price\": discounted(total, quantity)}\n",
        ),
        (
            "test_main.py",
            "from main import discounted\n\n\ndef test_small_orders_pay_full_price():\n    assert discounted(100, 3) == 100\n\n\ndef test_ten_units_earn_the_discount():\n    assert discounted(100, 10) == 90\n",
        ),
    ];
    for (p, c) in files {
        std::fs::write(src.join(p), c).unwrap();
    }
    // The real failing run, in the base image the app deploys on.
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "-e",
            "PYTHONDONTWRITEBYTECODE=1",
            "-v",
        ])
        .arg(format!("{}:/src:ro", src.display()))
        .args([
            "-w",
            "/src",
            "coval/python-web:bookworm",
            "python3",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    std::fs::write(ws.root.join("error.log"), &out.stdout).unwrap();

    let port = coval_tests::free_port().unwrap();
    let mut env = ws.env.clone();
    env.push(("COVAL_DOCKER__BASE_PORT".into(), port.to_string()));
    env.push((
        "COVAL_SANDBOX__IMAGES__PYTHON".into(),
        "coval/python-web:bookworm".into(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = coval(
        &ws.root,
        &[
            "--workspace",
            ".coval",
            "repair",
            "--engine",
            "search",
            "-e",
            "error.log",
            "-s",
            "shop",
            "--deploy",
        ],
        &env,
    );
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", text(&out.stderr));
    assert!(said.contains("deployed iter-002"), "{said}");
    let (code, body) = get(port, "/price?total=100&quantity=10").unwrap();
    assert_eq!((code, body.as_str()), (200, "{\"price\":90.0}"));
    assert!(containers(&project).iter().any(|c| c.ends_with("iter-002")));
}
