//! Triage on pasted traces: frames resolved in the project (by suffix, by Java package), the
//! innermost project frame named, and a wrapper exception located through its cause.

use anyhow::Result;

/// The triage of `log` on `project` with the default settings and the search engine.
pub(crate) fn triage_of(
    log: &str,
    project: &std::path::Path,
) -> Result<proto::messages::TriageReport> {
    let cfg = settings::load(&settings::LoadOptions {
        cwd: std::env::temp_dir().join("coval-no-config"),
        ..Default::default()
    })?;
    Ok(triage::analysis::triage(
        &triage::analysis::TriageConfig {
            llm: cfg.llm.clone(),
            cost: cfg.settings.cost_calculation.clone(),
            adaptive: cfg.settings.global.adaptive_evaluation.clone(),
        },
        &logparse::parse(log),
        &triage::project::Project::scan(project)?,
        &triage::analysis::Engine {
            name: "search".into(),
            is_model: false,
            explicit: true,
        },
        &[],
        None,
    ))
}

const ANDROID: &str = "05-14 09:12:44.001  812  812 E AndroidRuntime: FATAL EXCEPTION: main
05-14 09:12:44.002  812  812 E AndroidRuntime: Process: com.example.notes, PID: 812
05-14 09:12:44.003  812  812 E AndroidRuntime: java.lang.RuntimeException: Unable to start activity ComponentInfo{com.example.notes/com.example.notes.MainActivity}: java.lang.NullPointerException
05-14 09:12:44.004  812  812 E AndroidRuntime: \tat android.app.ActivityThread.performLaunchActivity(ActivityThread.java:2416)
05-14 09:12:44.005  812  812 E AndroidRuntime: \tat android.os.Looper.loop(Looper.java:154)
05-14 09:12:44.006  812  812 E AndroidRuntime: Caused by: java.lang.NullPointerException: Attempt to invoke virtual method on a null object reference
05-14 09:12:44.007  812  812 E AndroidRuntime: \tat com.example.notes.MainActivity.onCreate(MainActivity.java:27)
05-14 09:12:44.008  812  812 E AndroidRuntime: \tat android.app.Activity.performCreate(Activity.java:6679)
05-14 09:12:44.009  812  812 E AndroidRuntime: \t... 2 more
";

#[test]
fn a_wrapper_exception_is_located_through_its_cause() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("app/src/main/java/com/example/notes");
    std::fs::create_dir_all(&src)?;
    let body: String = (1..40).map(|i| format!("    // line {i}\n")).collect();
    std::fs::write(
        src.join("MainActivity.java"),
        format!("package com.example.notes;\npublic class MainActivity {{\n{body}}}\n"),
    )?;
    let t = triage_of(ANDROID, dir.path())?;
    assert_eq!(t.error_type, "java.lang.RuntimeException");
    assert!(t.frames.iter().all(|f| !f.in_project), "{:?}", t.frames);
    let inner = t.innermost.as_ref().expect("the cause's frame");
    assert_eq!(
        inner.resolved.as_deref(),
        Some("app/src/main/java/com/example/notes/MainActivity.java")
    );
    assert_eq!(inner.line, Some(27));
    let top = t.suspects.first().expect("a suspect");
    assert_eq!(
        (top.file.as_str(), top.line),
        (
            "app/src/main/java/com/example/notes/MainActivity.java",
            Some(27)
        )
    );

    // Without the project's files the frame is still named, as the log wrote it.
    let empty = tempfile::tempdir()?;
    let t = triage_of(ANDROID, empty.path())?;
    let inner = t.innermost.as_ref().expect("named without the file");
    assert_eq!(
        (inner.file.as_str(), inner.line, inner.resolved.as_deref()),
        ("MainActivity.java", Some(27), None)
    );
    Ok(())
}
