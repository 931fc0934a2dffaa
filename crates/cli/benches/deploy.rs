//! Deployments on the real Docker engine, through the real `coval` binary: seconds from
//! `coval run` to healthy for each strategy (cold: the image is built in the run; warm: it
//! exists), and requests failed during blue-green switches under continuous loopback
//! requests (a fresh connection per request), side by side in one run.
//!
//!   cargo bench -p cli --bench deploy [-- --switches N]
//!
//! Needs the Docker engine (`scripts/dev-services.sh up`); builds the python-web base image
//! when missing. The model is the scripted protocol server (no model server needed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llm::testing::{ProtocolServer, Reply};

struct Bench {
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Bench {
    fn coval(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_coval"))
            .current_dir(self.root.path())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .output()
            .expect("run coval")
    }

    fn run(&self, iteration: &str, port: u16, strategy: &str) -> (f64, f64, f64) {
        let t0 = Instant::now();
        let out = self.coval(&[
            "run",
            "-i",
            iteration,
            "-p",
            &port.to_string(),
            "--strategy",
            strategy,
            "--json",
        ]);
        let wall = t0.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "coval run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let d = &v["deployed"];
        (
            d["seconds_to_healthy"].as_f64().unwrap_or(f64::NAN),
            d["seconds_to_serving"].as_f64().unwrap_or(f64::NAN),
            wall,
        )
    }
}

fn get(port: u16) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no status".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn remove_image(image: &str) {
    let _ = Command::new("docker").args(["rmi", "-f", image]).output();
}

fn main() {
    let switches: usize = std::env::args()
        .skip_while(|a| a != "--switches")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-base-images.sh");
    let st = Command::new(script)
        .arg("python-web")
        .status()
        .expect("build-base-images.sh");
    assert!(st.success(), "the python-web base image could not be built");

    let server = ProtocolServer::start().expect("protocol server");
    let project = format!("bench-{}", std::process::id());
    let b = Bench {
        root: tempfile::tempdir().expect("tempdir"),
        env: vec![
            ("COVAL_LLM_URL".into(), "http://127.0.0.1:9".into()),
            ("COVAL_PROJECT__NAME".into(), project.clone()),
            ("COVAL_DEPLOY__DRAIN_SECS".into(), "5".into()),
            ("NO_COLOR".into(), "1".into()),
        ],
    };
    // iter-001: the FastAPI template; iter-002: one file changed by the (scripted) model.
    let out = b.coval(&["generate", "-d", "bench app", "-f", "fastapi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.push("/api/tags", Reply::ollama_tags(&["qwen2.5-coder:7b"]));
    server.push(
        "/api/chat",
        Reply::ollama_chat(
            "```diff\n--- a/main.py\n+++ b/main.py\n@@ -17,2 +17,2 @@\n def index():\n-    return {\"service\": \"bench-app\"}\n+    return {\"service\": \"bench-app\", \"version\": 2}\n```\n",
        ),
    );
    let mut b = b;
    b.env[0].1 = server.url();
    let out = b.coval(&[
        "generate", "-d", "v2", "--parent", "iter-001", "--model", "qwen",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    println!("coval run to healthy (iter-002, nothing serving before; 1 CPU-limited container)");
    println!(
        "{:<22} {:>12} {:>12} {:>12}",
        "strategy", "healthy s", "serving s", "command s"
    );
    let img = |it: &str| format!("coval-{project}:{it}");
    let cases: [(&str, &str, bool); 5] = [
        ("copy (cold build)", "copy", true),
        ("copy (image cached)", "copy", false),
        ("overlay (cold parent)", "overlay", true),
        ("overlay (image cached)", "overlay", false),
        ("symlink", "symlink", false),
    ];
    for (label, strategy, cold) in cases {
        if cold {
            remove_image(&img("iter-001"));
            remove_image(&img("iter-002"));
        }
        let port = free_port();
        let (h, s, wall) = b.run("iter-002", port, strategy);
        println!("{label:<22} {h:>12.2} {s:>12.2} {wall:>12.2}");
        let out = b.coval(&["stop"]);
        assert!(out.status.success());
    }

    // Switches under load: iter-001 (copy) and iter-002 (overlay) in turn on one port.
    let port = free_port();
    b.run("iter-001", port, "copy");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let load = std::thread::spawn(move || {
        let (mut n, mut failed) = (0usize, 0usize);
        while !s2.load(Ordering::SeqCst) {
            n += 1;
            if get(port) != Ok(200) {
                failed += 1;
            }
        }
        (n, failed)
    });
    let mut switch_secs = vec![];
    for i in 0..switches {
        let (it, strategy) = if i % 2 == 0 {
            ("iter-002", "overlay")
        } else {
            ("iter-001", "copy")
        };
        let (_, s, _) = b.run(it, port, strategy);
        switch_secs.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let (n, failed) = load.join().expect("load thread");
    let _ = b.coval(&["stop"]);
    remove_image(&img("iter-001"));
    remove_image(&img("iter-002"));
    switch_secs.sort_by(f64::total_cmp);
    println!();
    println!("blue-green switches under continuous loopback requests (new connection each)");
    println!(
        "{:<10} {:>10} {:>10} {:>14}",
        "switches", "requests", "failed", "median s/switch"
    );
    println!(
        "{:<10} {:>10} {:>10} {:>14.2}",
        switches,
        n,
        failed,
        switch_secs[switch_secs.len() / 2]
    );
}
