//! The MRE stage on real projects in the real sandbox: an example that reproduces, and one
//! that does not (the test reads a data file the minimal example leaves out), which falls back
//! to the whole project and says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use bus::runtime::{Handler, Input, Outcome};
use proto::messages::{Decided, Decision, EngineChoice, ProjectRef, RepairRequested};
use proto::{Envelope, Kind, Message, RepairId};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn mre_for(
    project: &Path,
    log: &str,
) -> Result<(proto::messages::MreSummary, tempfile::TempDir)> {
    let cfg = settings::load(&settings::LoadOptions {
        cwd: std::env::temp_dir().join("coval-no-config"),
        env: vec![("COVAL_SANDBOX__BACKEND".into(), "local".into())],
        ..Default::default()
    })?;
    let tri = crate::triage::triage_of(log, project)?;
    let repair_id = RepairId::new();
    let request = RepairRequested {
        repair_id,
        project: ProjectRef::LocalPath {
            path: project.display().to_string(),
        },
        error_log: log.to_owned(),
        test_cmd: None,
        iteration: None,
        engine: EngineChoice::Search,
        model: None,
        max_attempts: 1,
        analyze_only: false,
        requested_at_ms: 0,
        no_rebuild: false,
        origin: None,
    };
    let ws = tempfile::tempdir()?;
    let stage = mre::handler::MreStage {
        sandbox: cfg.settings.sandbox.clone(),
        workspace: vocab::Workspace::new(ws.path()),
        projects: store::projects::Projects::local(None),
    };
    let msg = Message::Decided(Decided {
        request,
        triage: tri,
        decision: Decision::default(),
    });
    let out = stage
        .handle(Input {
            envelope: Envelope::origin(Kind::Decided, repair_id),
            message: Arc::new(msg),
            delivered: 1,
        })
        .await;
    let Outcome::Publish(ms) = out else {
        anyhow::bail!("mre did not publish: {out:?}")
    };
    let Some(Message::MreReady(m)) = ms.into_iter().next() else {
        anyhow::bail!("not MreReady")
    };
    Ok((m.mre, ws))
}

#[tokio::test]
async fn an_mre_that_reproduces() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let ex = repo().join("examples/inventory");
    let log = std::fs::read_to_string(ex.join("error.log"))?;
    let (m, ws) = mre_for(&ex, &log).await?;
    assert!(m.reproduced && !m.whole_project, "{m:?}");
    assert!(
        m.files.contains(&"inventory/pricing.py".to_owned())
            && m.files.contains(&"tests/test_pricing.py".to_owned()),
        "{m:?}"
    );
    assert!(
        !m.files.iter().any(|f| f.ends_with("README.md")),
        "docs are not part of the example: {m:?}"
    );
    assert_eq!(m.failing_tests.len(), 2, "{m:?}");
    assert_eq!(m.passing_tests.len(), 5, "{m:?}");
    let dir = std::fs::read_dir(vocab::Workspace::new(ws.path()).repairs_dir())?
        .next()
        .unwrap()?
        .path()
        .join("mre");
    let readme = std::fs::read_to_string(dir.join("README.md"))?;
    assert!(
        readme.contains("python3 -m pytest") && readme.contains("AssertionError"),
        "{readme}"
    );
    assert!(
        std::fs::read_to_string(dir.join("Dockerfile"))?.contains("FROM coval/python:bookworm")
    );
    Ok(())
}

#[tokio::test]
async fn an_mre_that_does_not_reproduce_falls_back_to_the_whole_project() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let project = repo().join("tests/fixtures/mre/data_driven");
    let log = std::fs::read_to_string(repo().join("tests/fixtures/mre/data_driven.log"))?;
    let (m, _ws) = mre_for(&project, &log).await?;
    assert!(m.whole_project, "{m:?}");
    assert!(m.reproduced, "the whole project reproduces: {m:?}");
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("does not reproduce") && n.contains("whole project")),
        "{:?}",
        m.notes
    );
    assert!(!m.files.iter().any(|f| f.ends_with("cases.json")), "{m:?}");
    Ok(())
}
