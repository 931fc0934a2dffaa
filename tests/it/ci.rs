//! coval from CI: the recipe's script (`deploy/ci/coval-ci.sh`) against real workers, a
//! retried job that does not start a second repair, the job's origin in the report, NATS
//! identities (a publish-only user, a token, an nkey, TLS with client certificates), and the
//! "no triage worker" note only when no worker is bound.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bus::jetstream::JetStreamBus;
use bus::runtime::{self, Handler, Input, Outcome, Stats};
use coval_tests::{NatsServer, SyncMode, repo_root, test_bus_config, workspace_binary};
use proto::subjects::Namespace;
use proto::{RepairId, Stage};
use tokio_util::sync::CancellationToken;

use crate::workers::{Cluster, STAGES, project, text};

const NOTE: &str = "no triage worker is pulling work";

/// The CI's variables of one attempt of a GitHub Actions job.
fn github_env(attempt: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GITHUB_ACTIONS", "true".into()),
        ("GITHUB_REPOSITORY", "acme/inventory".into()),
        ("GITHUB_SHA", "3f2a9c1d".into()),
        ("GITHUB_REF_NAME", "main".into()),
        ("GITHUB_SERVER_URL", "https://github.example".into()),
        ("GITHUB_RUN_ID", "4242".into()),
        ("GITHUB_RUN_ATTEMPT", attempt.into()),
        ("GITHUB_JOB", "test".into()),
    ]
}

#[test]
fn the_ci_recipe_repairs_a_failing_job_once_even_when_the_job_is_retried() -> Result<()> {
    let mut c = Cluster::new("cirecipe", &[("COVAL_TRIAGE__COVERAGE", "false")])?;
    for s in STAGES {
        c.start(s, 0)?;
    }
    let proj = project(c.dir.path(), None)?;
    let coval = workspace_binary("coval")?;
    let bin_dir = coval.parent().context("bin dir")?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = repo_root().join("deploy/ci/coval-ci.sh");
    let run = |attempt: &str, out: &Path| -> Result<Output> {
        Ok(Command::new("sh")
            .arg(&script)
            .arg(proj.join("error.log"))
            .arg(&proj)
            .current_dir(c.dir.path())
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(github_env(attempt))
            .env("PATH", &path)
            .env("NATS_URL", &c.nats.url)
            .env("COVAL_OUT", out)
            .env("COVAL_TIMEOUT", "300")
            .output()?)
    };
    let first_out = c.dir.path().join("attempt-1");
    let first = run("1", &first_out)?;
    ensure!(first.status.code() == Some(0), "recipe: {}", text(&first));
    let comment = std::fs::read_to_string(first_out.join("comment.md"))?;
    for want in [
        "```diff",
        "@@",
        "**Outcome: fixed**",
        "Why repair rather than rebuild",
        "acme/inventory",
        "3f2a9c1d",
        "https://github.example/acme/inventory/actions/runs/4242",
    ] {
        ensure!(
            comment.contains(want),
            "comment.md lacks {want:?}:\n{comment}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first_out.join("report.json"))?)?;
    ensure!(
        report["origin"]["repository"] == "acme/inventory"
            && report["origin"]["commit"] == "3f2a9c1d"
            && report["origin"]["branch"] == "main"
            && report["origin"]["ci"] == "github"
            && report["origin"]["dedup_key"] == "github/acme/inventory/4242/test",
        "origin in report.json: {}",
        report["origin"]
    );
    let events = std::fs::read_to_string(first_out.join("events.jsonl"))?;
    let last: serde_json::Value =
        serde_json::from_str(events.lines().last().context("no events")?)?;
    let repair = last["repair_id"].as_str().context("repair_id")?.to_owned();
    ensure!(last["event"] == "repair_completed", "{last}");

    // The job is retried: a new attempt of the same run and job.
    let second_out = c.dir.path().join("attempt-2");
    let second = run("2", &second_out)?;
    ensure!(second.status.code() == Some(0), "retry: {}", text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    ensure!(
        err.contains(&format!("coval: repair {repair}")) && err.contains("submitted before"),
        "the retry did not find the first submission: {}",
        text(&second)
    );
    ensure!(
        std::fs::read_to_string(second_out.join("comment.md"))?.contains("```diff"),
        "the retry's comment has no patch"
    );
    let ledger = c.ledger()?;
    let repairs = ledger["repairs"].as_array().context("repairs")?;
    ensure!(
        repairs.len() == 1 && repairs[0]["id"] == repair.as_str(),
        "one repair expected: {ledger}"
    );
    ensure!(
        c.completions()?.get(&repair) == Some(&1),
        "{:?}",
        c.completions()?
    );
    // --no-dedup starts another one on purpose.
    let out = c
        .coval()?
        .args(["submit", "--no-dedup", "--nats", &c.nats.url, "-e"])
        .arg(proj.join("error.log"))
        .arg("-s")
        .arg(&proj)
        .envs(github_env("3"))
        .output()?;
    ensure!(out.status.success(), "{}", text(&out));
    let third = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(
        third.starts_with("rep_") && third != repair,
        "--no-dedup gave {third}"
    );
    Ok(())
}

/// A triage handler that holds every message until released.
struct Busy {
    release: Arc<tokio::sync::Notify>,
    taken: Arc<tokio::sync::Notify>,
}

impl Handler for Busy {
    fn stage(&self) -> Stage {
        Stage::Triage
    }
    async fn handle(&self, _: Input) -> Outcome {
        self.taken.notify_one();
        self.release.notified().await;
        Outcome::Skip("released".into())
    }
}

#[test]
fn the_no_worker_note_means_no_worker_bound_not_all_of_them_busy() -> Result<()> {
    let nats = NatsServer::start(SyncMode::Default)?;
    let dir = tempfile::tempdir()?;
    let proj = project(dir.path(), None)?;
    let submit = || -> Result<Output> {
        Ok(Command::new(workspace_binary("coval")?)
            .args(["--workspace"])
            .arg(dir.path().join("client"))
            .args(["submit", "--nats", &nats.url, "-e"])
            .arg(proj.join("error.log"))
            .arg("-s")
            .arg(&proj)
            .env("COVAL_BUS__NAMESPACE", "busy")
            .env("NO_COLOR", "1")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITLAB_CI")
            .output()?)
    };
    // Nobody bound: the note.
    let out = submit()?;
    ensure!(out.status.success(), "{}", text(&out));
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains(NOTE),
        "no note without workers: {}",
        text(&out)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut cfg = test_bus_config();
    cfg.concurrency = 1;
    cfg.ack_wait_secs = 30;
    let bus = rt.block_on(JetStreamBus::connect(
        &nats.url,
        Namespace::new("busy")?,
        cfg.clone(),
    ))?;
    let release = Arc::new(tokio::sync::Notify::new());
    let taken = Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    let store = tempfile::tempdir()?;
    let worker = rt.spawn(runtime::run(
        bus.clone(),
        Arc::new(Busy {
            release: release.clone(),
            taken: taken.clone(),
        }),
        Arc::new(store::Store::open(store.path())?),
        cfg,
        Arc::new(Stats::default()),
        stop.clone(),
    ));
    // The one slot takes the queued request and holds it: the worker is busy, with no pull
    // request open (what the old check took for "no worker").
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), taken.notified())
            .await
            .context("the worker never took the request")
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let load = loop {
        let load = rt
            .block_on(bus.consumer_load(Stage::Triage))
            .context("no consumer")?;
        if load.waiting == 0 && load.ack_pending >= 1 {
            break load;
        }
        if Instant::now() > deadline {
            bail!("the busy worker still has a pull open: {load:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(load.has_workers(), "{load:?}");
    let out = submit()?;
    ensure!(out.status.success(), "{}", text(&out));
    ensure!(
        !String::from_utf8_lossy(&out.stderr).contains(NOTE),
        "the note with a busy worker bound ({load:?}): {}",
        text(&out)
    );
    release.notify_waiters();
    release.notify_one();
    stop.cancel();
    rt.block_on(worker)??;
    Ok(())
}

/// `coval submit` with `args` and `env` on `url`, in `dir`.
fn submit_as(
    url: &str,
    ns: &str,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Output> {
    let proj = dir.join("inventory");
    if !proj.exists() {
        project(dir, None)?;
    }
    let mut c = Command::new(workspace_binary("coval")?);
    c.arg("--workspace")
        .arg(dir.join("client"))
        .args(["submit", "--nats", url, "-e"])
        .arg(proj.join("error.log"))
        .arg("-s")
        .arg(&proj)
        .args(args)
        .env("COVAL_BUS__NAMESPACE", ns)
        .env("COVAL_BUS__CONNECT_TIMEOUT_SECS", "3")
        .env("NO_COLOR", "1");
    for k in [
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_CREDS",
        "NATS_NKEY",
        "NATS_CA",
        "NATS_CERT",
        "NATS_KEY",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
    ] {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    Ok(c.output()?)
}

/// Starts a `coval-triage` worker with `env` (its identity) and waits until it is ready.
struct Triage(std::process::Child, std::path::PathBuf);

impl Triage {
    fn start(url: &str, ns: &str, dir: &Path, env: &[(&str, &str)]) -> Result<Triage> {
        let log = dir.join(format!("triage-{}.log", rand::random::<u32>()));
        let child = Command::new(workspace_binary("coval-triage")?)
            .args(["--nats", url, "--workspace"])
            .arg(dir.join("ws"))
            .env("COVAL_BUS__NAMESPACE", ns)
            .env("COVAL_SANDBOX__BACKEND", "local")
            .env("COVAL_TRIAGE__COVERAGE", "false")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let t = Triage(child, log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !t.log().contains(": ready") {
            if Instant::now() > deadline {
                bail!("triage not ready:\n{}", t.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(t)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Triage {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Has the repair reached triage (a progress event of it in the event stream)?
fn reached_triage(url: &str, auth: &[(&str, &str)], ns: &str, repair: &str) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (user, pass) = (auth[0].1, auth[1].1);
    rt.block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into())
            .connect(url)
            .await?;
        let js = async_nats::jetstream::new(client);
        let ns = Namespace::new(ns)?;
        let repair: RepairId = repair.parse()?;
        let stream = js.get_stream(ns.event_stream()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut subjects = stream.info_with_subjects(ns.repair_events(&repair)).await?;
            use futures::StreamExt;
            if subjects.next().await.is_some() {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[test]
fn a_publish_only_ci_identity_submits_and_may_do_nothing_else() -> Result<()> {
    let ns = "cipub";
    let ups = ns.to_ascii_uppercase();
    // What `coval submit` needs, and nothing more: the request's subject, the snapshot
    // bucket, the submissions bucket, stream and consumer info, inbox replies.
    let conf = format!(
        r#"authorization {{
  users = [
    {{ user: worker, password: wpass }}
    {{ user: ci, password: cpass, permissions: {{
        publish: {{ allow: [
          "{ns}.stage.triage.>",
          "$O.{ns}-snapshots.>",
          "$KV.{ns}-submissions.>",
          "$JS.API.INFO",
          "$JS.API.STREAM.INFO.{ups}_WORK_TRIAGE",
          "$JS.API.STREAM.INFO.{ups}_EVENTS",
          "$JS.API.STREAM.INFO.OBJ_{ns}-snapshots",
          "$JS.API.STREAM.INFO.KV_{ns}-submissions",
          "$JS.API.STREAM.PURGE.OBJ_{ns}-snapshots",
          "$JS.API.STREAM.MSG.GET.OBJ_{ns}-snapshots",
          "$JS.API.STREAM.MSG.GET.KV_{ns}-submissions",
          "$JS.API.DIRECT.GET.OBJ_{ns}-snapshots.>",
          "$JS.API.DIRECT.GET.KV_{ns}-submissions.>",
          "$JS.API.CONSUMER.INFO.{ups}_WORK_TRIAGE.triage"
        ] }}
        subscribe: {{ allow: ["_INBOX.>"] }}
    }} }}
  ]
}}"#
    );
    let nats = NatsServer::start_with(SyncMode::Default, &conf, "nats")?;
    let dir = tempfile::tempdir()?;
    let worker_id = [("NATS_USER", "worker"), ("NATS_PASSWORD", "wpass")];
    // The worker's identity from the environment; it creates streams and buckets.
    let triage = Triage::start(&nats.url, ns, dir.path(), &worker_id)?;
    // The CI's identity from flags.
    let out = submit_as(
        &nats.url,
        ns,
        dir.path(),
        &["--nats-user", "ci", "--nats-password", "cpass"],
        &[],
    )?;
    ensure!(
        out.status.success(),
        "submit as the CI user: {}\n{}",
        text(&out),
        triage.log()
    );
    let repair = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(
        reached_triage(&nats.url, &worker_id, ns, &repair)?,
        "the CI user's request never reached triage:\n{}",
        triage.log()
    );
    // A wrong password: exit 3, and the server's reason.
    let out = submit_as(
        &nats.url,
        ns,
        dir.path(),
        &[],
        &[("NATS_USER", "ci"), ("NATS_PASSWORD", "nope")],
    )?;
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    ensure!(
        out.status.code() == Some(3) && err.contains("authorization"),
        "wrong password: {}",
        text(&out)
    );
    // The CI identity cannot be a worker (it may not create consumers or read work).
    let out = Command::new(workspace_binary("coval-decision")?)
        .args(["--nats", &nats.url, "--workspace"])
        .arg(dir.path().join("ws-ci"))
        .env("COVAL_BUS__NAMESPACE", ns)
        .env("COVAL_BUS__CONNECT_TIMEOUT_SECS", "3")
        .env("COVAL_BUS__PUBLISH_TIMEOUT_SECS", "3")
        .env("NATS_USER", "ci")
        .env("NATS_PASSWORD", "cpass")
        .output()?;
    ensure!(
        !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "the CI identity ran a worker: {}",
        text(&out)
    );
    // Nor publish work for a later stage.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let refused = rt.block_on(async {
        let client =
            async_nats::ConnectOptions::with_user_and_password("ci".into(), "cpass".into())
                .connect(&nats.url)
                .await?;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        let r = async {
            js.publish(format!("{ns}.stage.validate.fix_proposed"), "x".into())
                .await?
                .await
        }
        .await;
        anyhow::Ok(r.is_err())
    })?;
    ensure!(refused, "the CI identity published validation work");
    // Two ways of authenticating at once: bad input, said before connecting.
    let out = submit_as(
        &nats.url,
        ns,
        dir.path(),
        &["--nats-token", "t"],
        &[("NATS_USER", "ci"), ("NATS_PASSWORD", "cpass")],
    )?;
    ensure!(
        out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("one way"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// Makes a CA and a certificate signed by it for `cn` (with 127.0.0.1 as its address) in
/// `dir`, with the openssl command.
fn certificate(dir: &Path, name: &str, ca: Option<&str>) -> Result<()> {
    let key = dir.join(format!("{name}-key.pem"));
    let cert = dir.join(format!("{name}.pem"));
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        ensure!(out.status.success(), "openssl {args:?}: {}", text(&out));
        Ok(())
    };
    match ca {
        None => run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            key.to_str().context("path")?,
            "-out",
            cert.to_str().context("path")?,
        ]),
        Some(ca) => {
            let csr = dir.join(format!("{name}.csr"));
            let ext = dir.join(format!("{name}.ext"));
            std::fs::write(
                &ext,
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
            )?;
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                key.to_str().context("path")?,
                "-out",
                csr.to_str().context("path")?,
            ])?;
            run(&[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                csr.to_str().context("path")?,
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}-key.pem"),
                "-CAcreateserial",
                "-extfile",
                ext.to_str().context("path")?,
                "-out",
                cert.to_str().context("path")?,
            ])
        }
    }
}

#[test]
fn tokens_nkeys_and_tls_client_certificates_are_taken_from_flags_or_the_environment() -> Result<()>
{
    let ns = "ciauth";
    // A token.
    {
        let nats = NatsServer::start_with(
            SyncMode::Default,
            "authorization { token: \"s3cret\" }",
            "nats",
        )?;
        let dir = tempfile::tempdir()?;
        let _w = Triage::start(&nats.url, ns, dir.path(), &[("NATS_TOKEN", "s3cret")])?;
        let ok = submit_as(&nats.url, ns, dir.path(), &[], &[("NATS_TOKEN", "s3cret")])?;
        ensure!(ok.status.success(), "token: {}", text(&ok));
        let no = submit_as(&nats.url, ns, dir.path(), &[], &[])?;
        ensure!(no.status.code() == Some(3), "no token: {}", text(&no));
    }
    // An nkey.
    {
        let pair = nkeys::KeyPair::new_user();
        let dir = tempfile::tempdir()?;
        let seed = dir.path().join("user.nk");
        std::fs::write(&seed, format!("{}\n", pair.seed()?))?;
        let nats = NatsServer::start_with(
            SyncMode::Default,
            &format!(
                "authorization {{ users = [ {{ nkey: {} }} ] }}",
                pair.public_key()
            ),
            "nats",
        )?;
        let seed = seed.to_str().context("path")?;
        let _w = Triage::start(&nats.url, ns, dir.path(), &[("NATS_NKEY", seed)])?;
        let ok = submit_as(&nats.url, ns, dir.path(), &["--nats-nkey", seed], &[])?;
        ensure!(ok.status.success(), "nkey: {}", text(&ok));
        let no = submit_as(&nats.url, ns, dir.path(), &[], &[])?;
        ensure!(no.status.code() == Some(3), "no nkey: {}", text(&no));
    }
    // TLS, with the server verifying client certificates.
    {
        let dir = tempfile::tempdir()?;
        certificate(dir.path(), "ca", None)?;
        certificate(dir.path(), "server", Some("ca"))?;
        certificate(dir.path(), "client", Some("ca"))?;
        let d = dir.path().display().to_string();
        let conf = format!(
            "tls {{\n  cert_file: \"{d}/server.pem\"\n  key_file: \"{d}/server-key.pem\"\n  ca_file: \"{d}/ca.pem\"\n  verify: true\n}}"
        );
        let nats = NatsServer::start_in(dir, SyncMode::Default, &conf, "tls")?;
        let work = tempfile::tempdir()?;
        let (ca, cert, key) = (
            format!("{d}/ca.pem"),
            format!("{d}/client.pem"),
            format!("{d}/client-key.pem"),
        );
        let tls = [
            ("NATS_CA", ca.as_str()),
            ("NATS_CERT", cert.as_str()),
            ("NATS_KEY", key.as_str()),
        ];
        let _w = Triage::start(&nats.url, ns, work.path(), &tls)?;
        let ok = submit_as(
            &nats.url,
            ns,
            work.path(),
            &["--nats-ca", &ca, "--nats-cert", &cert, "--nats-key", &key],
            &[],
        )?;
        ensure!(ok.status.success(), "tls: {}", text(&ok));
        // Without a client certificate the server refuses the connection.
        let no = submit_as(&nats.url, ns, work.path(), &["--nats-ca", &ca], &[])?;
        ensure!(
            no.status.code() == Some(3),
            "no client certificate: {}",
            text(&no)
        );
        // A certificate without its key is the user's mistake.
        let half = submit_as(&nats.url, ns, work.path(), &["--nats-cert", &cert], &[])?;
        ensure!(
            half.status.code() == Some(2),
            "cert without key: {}",
            text(&half)
        );
    }
    Ok(())
}

/// Decentralized auth: a server in operator mode trusts only JWTs its operator's accounts
/// signed; `coval submit` and a worker authenticate with a creds file (user JWT and nkey seed),
/// as `nsc` writes it. The JWTs are signed in the test (`coval_tests::jwt`, with `nkeys`).
#[test]
fn a_creds_file_with_a_user_jwt_authenticates_against_an_operator_mode_server() -> Result<()> {
    use coval_tests::jwt::{Operator, creds_file};
    let ns = "cijwt";
    let op = Operator::new()?;
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: String| -> Result<String> {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p.to_str().context("path")?.to_owned())
    };
    let good = write("worker.creds", op.creds()?)?;
    let nats = NatsServer::start_with(SyncMode::Default, &op.server_config(), "nats")?;
    let _w = Triage::start(&nats.url, ns, dir.path(), &[("NATS_CREDS", &good)])?;
    let ok = submit_as(&nats.url, ns, dir.path(), &["--nats-creds", &good], &[])?;
    ensure!(ok.status.success(), "creds: {}", text(&ok));
    // Refused: no credentials; a user of an operator the server does not trust; a seed that
    // is not the JWT's user (the signature of the server's nonce does not match).
    let stranger = write("stranger.creds", Operator::new()?.creds()?)?;
    let mismatched = write(
        "mismatched.creds",
        creds_file(&op.user_jwt, &nkeys::KeyPair::new_user())?,
    )?;
    for (what, args) in [
        ("no credentials", vec![]),
        ("another operator's user", vec!["--nats-creds", &stranger]),
        ("a seed of another user", vec!["--nats-creds", &mismatched]),
    ] {
        let no = submit_as(&nats.url, ns, dir.path(), &args, &[])?;
        ensure!(no.status.code() == Some(3), "{what}: {}", text(&no));
    }
    Ok(())
}
