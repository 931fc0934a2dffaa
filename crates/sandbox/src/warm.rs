//! The warm test servers: one Python process per repair session, started inside the sandbox,
//! that imports pytest once and forks a child per candidate (`warm_server.py`), and, in Docker,
//! one node process that is `node --test`'s runner and starts other `node` commands
//! (`warm_node.js`); what each does and why it stays isolated is written there. This module is
//! the host's side: which commands they serve ([`served`]), the wire protocol (requests as JSON lines,
//! replies as a JSON header line followed by raw blobs), a [`Channel`] over any byte stream
//! (a Docker exec's attached streams, a local child's pipes), and turning a reply into the same
//! [`RunResult`] a fresh process would have given. Anything unexpected is a [`WarmFailure`]:
//! the caller stops the server and runs that candidate the old way, never guesses a verdict.
//! Both backends drive their server through one [`WarmClient`] (`client`), each behind its own
//! [`Transport`]. The protocol's golden fixtures are in `protocol/` (crate root); this module's
//! tests, `tests/test_protocol.py` and `tests/protocol.test.js` check all three sides on them.

use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::RunResult;

mod client;

pub(crate) use client::{Candidate, Staged, Transport, WarmClient};

/// The server's source; run as `python3 -c SERVER coval-warm [--sweep] [--oom] [--wipe DIR...]`.
pub(crate) const SERVER: &str = include_str!("warm_server.py");

/// The node server's source; run by [`PROTECTED_NODE`] as
/// `-e NODE_SERVER coval-warm-node --node NODE [--sweep] [--oom] [--wipe DIR...]`.
pub(crate) const NODE_SERVER: &str = include_str!("warm_node.js");

/// The copy of node that coval's node images carry for the server: executable but not readable
/// by the candidates' user, so the kernel makes the server's process non-dumpable.
pub(crate) const PROTECTED_NODE: &str = "/usr/local/libexec/coval/node";

/// The node the protected copy was made from: the one `node` must resolve to.
pub(crate) const IMAGE_NODE: &str = "/usr/bin/node";

/// How a server that cannot run at all says so (its greeting is not ready): the session then
/// stops trying it, rather than counting failures.
const CANNOT_RUN: &str = "the server cannot run here";

/// How long the server may take to import pytest and say it is ready.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Server failures (start, death, misbehaviour) after which a session stops using it.
pub(crate) const MAX_FAILURES: u32 = 3;

/// Longest header line accepted from the server.
const MAX_HEADER: usize = 64 << 10;

/// What a session's warm server serves, read off a candidate's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Served<'a> {
    /// `python3 -m pytest ARGS`: the interpreter and pytest's arguments, run in `cwd` (a
    /// relative dir of the project, empty for its root: [`CD_EXEC`]).
    Pytest {
        interpreter: &'a str,
        args: &'a [String],
        cwd: &'a str,
    },
    /// `node --test --test-reporter=tap PATHS`, run directly or as the shell line of
    /// [`super::project::node_test_cmd`] (`shell`): the paths.
    NodeTest { paths: Vec<String>, shell: bool },
    /// Any other `node ARGS` (such as failing-first's `node --test-reporter=tap FILE`): the node
    /// server starts exactly that command as a fresh process, without a `docker exec` for it.
    NodeSpawn { argv: &'a [String] },
}

impl Served<'_> {
    /// Which server serves it: one per session, started for the first such candidate.
    pub fn server(&self) -> &str {
        match self {
            Served::Pytest { interpreter, .. } => interpreter,
            Served::NodeTest { .. } | Served::NodeSpawn { .. } => "node",
        }
    }
}

/// The command as one the warm servers reproduce exactly, or `None` (a fresh process).
pub(crate) fn served(argv: &[String]) -> Option<Served<'_>> {
    if let Some((interpreter, args, cwd)) = pytest_invocation(argv) {
        return Some(Served::Pytest {
            interpreter,
            args,
            cwd,
        });
    }
    if let Some((paths, shell)) = node_test_invocation(argv) {
        return Some(Served::NodeTest { paths, shell });
    }
    match argv {
        [node, _, ..] if node == "node" => Some(Served::NodeSpawn { argv }),
        _ => None,
    }
}

/// The prefix [`super::project::node_test_cmd`] puts before an npm test script.
const NODE_SHELL_PREFIX: &str = "PATH=\"$PWD/node_modules/.bin:$PATH\"; ";

/// `(paths, through the shell)` when `argv` is `node --test --test-reporter=tap PATHS...`, or
/// that line as [`super::project::node_test_cmd`] writes it for `sh -c`: only plain words, so
/// the shell would neither expand nor split them differently. Other runner flags (name
/// patterns, `--test-only`, another reporter) are read by the runner process itself, which the
/// server's runner is not: those run fresh.
pub(crate) fn node_test_invocation(argv: &[String]) -> Option<(Vec<String>, bool)> {
    let (words, shell): (Vec<&str>, bool) = match argv {
        [sh, c, script] if sh == "sh" && c == "-c" => {
            let line = script.strip_prefix(NODE_SHELL_PREFIX)?;
            let plain = |w: &str| {
                !w.is_empty()
                    && w.chars().all(|c| {
                        c.is_ascii_alphanumeric()
                            || matches!(c, '_' | '.' | '/' | '-' | '=' | '@' | '+' | ',' | ':')
                    })
            };
            let words: Vec<&str> = line.split(' ').collect();
            if !words.iter().all(|w| plain(w)) {
                return None;
            }
            (words, true)
        }
        _ => (argv.iter().map(String::as_str).collect(), false),
    };
    let (node, rest) = words.split_first()?;
    if *node != "node" {
        return None;
    }
    let (mut test, mut tap, mut paths) = (0, 0, Vec::new());
    for w in rest {
        match *w {
            "--test" => test += 1,
            "--test-reporter=tap" => tap += 1,
            w if w.starts_with('-') || w.is_empty() => return None,
            w => paths.push(w.to_owned()),
        }
    }
    (test == 1 && tap == 1).then_some((paths, shell))
}

/// The shell line that runs its arguments in a subdirectory: `sh -c CD_EXEC_LINE CMD ARGS...`,
/// with `DIR` in place, is `cd DIR && CMD ARGS...` (the form of a user's `cd sub && ...`).
pub const CD_EXEC: &str = "cd DIR && exec \"$0\" \"$@\"";

/// The `sh -c` line of [`CD_EXEC`] for `dir` (a plain relative path: see [`plain_subdir`]).
pub fn cd_exec_line(dir: &str) -> String {
    CD_EXEC.replacen("DIR", dir, 1)
}

/// `dir` when it is a plain relative path inside the project (letters, digits, `._-/`, no
/// `..`, not absolute): a shell reads it as itself, and it cannot leave the project.
pub fn plain_subdir(dir: &str) -> Option<&str> {
    let dir = dir.trim_end_matches('/');
    let plain = !dir.is_empty()
        && !dir.starts_with('/')
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
        && dir
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    plain.then_some(dir)
}

/// `(interpreter, pytest arguments, dir)` when `argv` is `python3 -m pytest ARGS...` (or
/// `python -m pytest`, or a path to either), run in the project's root (dir empty) or, through
/// [`CD_EXEC`], in one of its subdirectories: the shapes the pytest server reproduces exactly.
/// Anything else (another shell line, interpreter options, another tool) is not its.
pub(crate) fn pytest_invocation(argv: &[String]) -> Option<(&str, &[String], &str)> {
    if let [sh, c, line, rest @ ..] = argv
        && sh == "sh"
        && c == "-c"
    {
        let dir = line
            .strip_prefix("cd ")?
            .strip_suffix(&CD_EXEC["cd DIR".len()..])?;
        let dir = plain_subdir(dir).filter(|d| *d == dir)?;
        let (interp, args, _) = pytest_invocation(rest).filter(|(_, _, d)| d.is_empty())?;
        return Some((interp, args, dir));
    }
    let (interp, rest) = argv.split_first()?;
    let name = interp.rsplit('/').next().unwrap_or(interp);
    let is_python = name == "python"
        || name == "python3"
        || name
            .strip_prefix("python3.")
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()));
    if !is_python || interp.contains(char::is_whitespace) {
        return None;
    }
    match rest {
        [m, pytest, args @ ..] if m == "-m" && pytest == "pytest" => Some((interp, args, "")),
        _ => None,
    }
}

/// Why the warm path could not give a verdict (logged; the candidate then runs the old way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WarmFailure(pub String);

impl std::fmt::Display for WarmFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail(why: impl Into<String>) -> WarmFailure {
    WarmFailure(why.into())
}

/// How often a session's candidates were served warm, and why it stopped, if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmStats {
    /// Servers started (1 unless one died or misbehaved).
    pub starts: u32,
    /// Candidates whose verdict came from the warm server.
    pub served: u64,
    /// Candidates the server could not serve, run as a fresh process instead.
    pub fallbacks: u64,
    /// Of `served`, those run in a fork of a pytest session collected on their base.
    pub collected: u64,
    /// Why the session stopped using the server, when it did.
    pub off: Option<String>,
}

/// The warm server's bookkeeping in one session (shared by both backends).
#[derive(Debug)]
pub(crate) struct WarmState {
    pub enabled: bool,
    failures: u32,
    pub stats: WarmStats,
}

impl WarmState {
    pub fn new(enabled: bool) -> WarmState {
        WarmState {
            enabled,
            failures: 0,
            stats: WarmStats::default(),
        }
    }

    /// The server may be used (or started) for the next candidate.
    pub fn usable(&self) -> bool {
        self.enabled && self.stats.off.is_none()
    }

    /// Records a failure; after [`MAX_FAILURES`] the session stops using the server.
    pub fn failed(&mut self, why: &WarmFailure, counted_candidate: bool) {
        if counted_candidate {
            self.stats.fallbacks += 1;
        }
        if why.0.starts_with(CANNOT_RUN) {
            // It said so itself: starting it again would only say it again.
            self.turn_off(why.0.clone());
            return;
        }
        self.failures += 1;
        if self.failures >= MAX_FAILURES && self.stats.off.is_none() {
            self.stats.off = Some(format!(
                "the warm test server failed {} times (last: {why})",
                self.failures
            ));
            tracing::warn!(reason = %why, "warm test server off for the rest of this session; candidates run as fresh processes");
        }
    }

    /// The server cannot run here at all (e.g. an environment it cannot reproduce).
    pub fn turn_off(&mut self, why: String) {
        if self.stats.off.is_none() {
            tracing::info!(reason = %why, "warm test server not used in this session");
            self.stats.off = Some(why);
        }
    }
}

/// Whether a warning about the warm server with this text should be said now: the sessions of
/// one attempt (one per lane) meet the same trouble at the same moment, and a person should
/// read it once. The same text again within a minute is logged at debug level only.
pub(crate) fn first_telling(text: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    const QUIET_FOR: Duration = Duration::from_secs(60);
    static TOLD: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let mut told = TOLD
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    told.retain(|_, at| now.duration_since(*at) < QUIET_FOR);
    match told.get(text) {
        Some(_) => false,
        None => {
            told.insert(text.to_owned(), now);
            true
        }
    }
}

/// One candidate for the server.
#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub id: &'a str,
    /// Dir the child copies the candidate from (read-only to it), or none.
    pub src: Option<&'a str>,
    /// The candidate's own fresh work dir (created by the copy).
    pub work: &'a str,
    /// pytest's arguments.
    pub args: &'a [String],
    /// The dir of `work` the child runs in (relative; absent: `work` itself).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub cwd: &'a str,
    /// Wall-clock seconds from fork to kill.
    pub timeout: f64,
    /// stdout + stderr kept.
    pub cap: usize,
    /// The child is killed when it has written more than this (≥ `cap`): the slack the
    /// backend's fresh path allows, so both stop a flood at the same point.
    pub kill_at: usize,
    pub collect: &'a [String],
    /// Cap on each collected file.
    pub fcap: usize,
    /// For the node server: the command is the shell line (PATH gains the project's
    /// `node_modules/.bin`, PWD is set, as the shell does).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shell: bool,
    /// For the node server: `args` is a whole `node ...` command to start as it is.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spawn: bool,
    /// How the candidate differs from a base tree, when the caller knows: the server may then
    /// serve it from a pytest session collected on the base (see `warm_server.py`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast: Option<FastRequest<'a>>,
}

/// The base a candidate was made from and the files it changed.
#[derive(Debug, Serialize)]
pub(crate) struct FastRequest<'a> {
    /// The base tree as the server sees it (staged, read-only to it).
    pub base: &'a str,
    /// Where the server's collector keeps its copy of the base (directly in a wiped area).
    pub work: &'a str,
    /// Relative paths of the files the candidate changed.
    pub changed: &'a [String],
}

/// A hint for [`crate::Session::run_changed`]: the candidate dir is `base` with
/// `changed` (relative paths) changed and nothing else.
#[derive(Debug, Clone, Copy)]
pub struct Changed<'a> {
    pub base: &'a std::path::Path,
    pub changed: &'a [String],
}

/// The server's account of one candidate (the header of a `reply` frame).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct Reply {
    pub id: String,
    pub code: Option<i64>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub over_cap: bool,
    /// Bytes the child wrote on stdout and stderr together.
    pub total: u64,
    /// The cgroup's OOM-kill count before and after (Docker).
    pub oom: Option<(u64, u64)>,
    /// Collected files present, in the order of their blobs.
    pub files: Vec<String>,
    /// Every process of the candidate was killed and the work areas are empty again.
    pub clean: bool,
    /// The server's own time for the candidate (fork to wiped), for logs.
    #[serde(default)]
    pub seconds: f64,
    /// Where that time went: `(step, seconds since the request)`, for logs.
    #[serde(default)]
    pub marks: Vec<(String, f64)>,
    /// For requests with a base: `served` when the collected session gave the verdict, else
    /// why not (the candidate then ran the normal way).
    #[serde(default)]
    pub fast: Option<String>,
    /// Seconds spent starting the collector before this candidate (not part of its run).
    #[serde(default)]
    pub setup: f64,
}

#[derive(Debug, Deserialize)]
struct Hello {
    ready: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    python: Option<String>,
    #[serde(default)]
    pytest: Option<String>,
    #[serde(default)]
    node: Option<String>,
}

/// A frame: the JSON header and the raw blobs it announced.
#[derive(Debug, PartialEq)]
pub(crate) struct Frame {
    pub header: serde_json::Value,
    pub blobs: Vec<Vec<u8>>,
}

/// Splits the server's stdout into frames; refuses oversized headers and bodies.
#[derive(Debug)]
pub(crate) struct Frames {
    buf: Vec<u8>,
    max_body: usize,
}

impl Frames {
    pub fn new(max_body: usize) -> Frames {
        Frames {
            buf: Vec::new(),
            max_body,
        }
    }

    pub fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// The next complete frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WarmFailure> {
        let Some(nl) = self.buf.iter().position(|&c| c == b'\n') else {
            if self.buf.len() > MAX_HEADER {
                return Err(fail("the server sent a header line over 64 KiB"));
            }
            return Ok(None);
        };
        if nl > MAX_HEADER {
            return Err(fail("the server sent a header line over 64 KiB"));
        }
        let header: serde_json::Value = serde_json::from_slice(&self.buf[..nl])
            .map_err(|e| fail(format!("the server sent a header that is not JSON: {e}")))?;
        let lens: Vec<usize> = match header.get("blobs") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| fail(format!("the server sent bad blob lengths: {e}")))?,
            None => return Err(fail("the server sent a header without `blobs`")),
        };
        let body = lens
            .iter()
            .try_fold(0usize, |a, &n| a.checked_add(n))
            .filter(|&n| n <= self.max_body)
            .ok_or_else(|| fail("the server announced more bytes than a reply may hold"))?;
        if self.buf.len() < nl + 1 + body {
            return Ok(None);
        }
        let mut at = nl + 1;
        let blobs = lens
            .iter()
            .map(|&n| {
                let b = self.buf[at..at + n].to_vec();
                at += n;
                b
            })
            .collect();
        self.buf.drain(..at);
        Ok(Some(Frame { header, blobs }))
    }
}

/// What the server's output stream carries.
pub(crate) enum Chunk {
    /// Protocol bytes (the server's stdout).
    Out(Bytes),
    /// The server's own stderr (diagnostics).
    Log(Bytes),
    /// The stream broke.
    Broken(String),
}

pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Chunk> + Send>>;
pub(crate) type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Requests out, frames in, with deadlines; keeps the tail of the server's stderr for logs.
/// The streams sit in mutexes only so that a session holding a channel is `Sync`; they are
/// never locked, only reached through `&mut` (`get_mut`).
pub(crate) struct Channel {
    input: Mutex<Input>,
    output: Mutex<ChunkStream>,
    frames: Frames,
    log: Vec<u8>,
    /// The pid of the child running the current request (its process group), once known.
    pub child: Option<u32>,
}

impl Channel {
    pub fn new(input: Input, output: ChunkStream, max_body: usize) -> Channel {
        Channel {
            input: Mutex::new(input),
            output: Mutex::new(output),
            frames: Frames::new(max_body),
            log: Vec::new(),
            child: None,
        }
    }

    fn log_tail(&self) -> String {
        let s = String::from_utf8_lossy(&self.log);
        let s = s.trim();
        if s.is_empty() {
            String::new()
        } else {
            format!(
                "; its stderr ends: {}",
                s.chars()
                    .rev()
                    .take(600)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
            )
        }
    }

    async fn next_frame(&mut self, deadline: tokio::time::Instant) -> Result<Frame, WarmFailure> {
        loop {
            if let Some(f) = self.frames.next_frame()? {
                return Ok(f);
            }
            let output = self.output.get_mut().unwrap_or_else(|e| e.into_inner());
            let item = tokio::time::timeout_at(deadline, output.next())
                .await
                .map_err(|_| {
                    fail(format!(
                        "the server did not answer in time{}",
                        self.log_tail()
                    ))
                })?;
            match item {
                Some(Chunk::Out(b)) => self.frames.push(&b),
                Some(Chunk::Log(b)) => {
                    self.log.extend_from_slice(&b);
                    if self.log.len() > 4096 {
                        let cut = self.log.len() - 4096;
                        self.log.drain(..cut);
                    }
                }
                Some(Chunk::Broken(e)) => {
                    return Err(fail(format!(
                        "the server's stream broke: {e}{}",
                        self.log_tail()
                    )));
                }
                None => return Err(fail(format!("the server exited{}", self.log_tail()))),
            }
        }
    }

    /// Waits for the server's greeting; `Ok` once it has imported pytest.
    pub async fn hello(&mut self) -> Result<String, WarmFailure> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let f = self.next_frame(deadline).await?;
        if f.header.get("kind").and_then(|k| k.as_str()) != Some("hello") {
            return Err(fail("the server did not start with a greeting"));
        }
        let h: Hello = serde_json::from_value(f.header)
            .map_err(|e| fail(format!("the server's greeting is malformed: {e}")))?;
        if !h.ready {
            return Err(fail(format!(
                "{CANNOT_RUN}: {}",
                h.error.unwrap_or_default()
            )));
        }
        if let Some(node) = h.node {
            return Ok(format!("node {node}"));
        }
        Ok(format!(
            "python {}, pytest {}",
            h.python.unwrap_or_default(),
            h.pytest.unwrap_or_default()
        ))
    }

    /// Sends one request and waits (until `deadline`) for its reply.
    pub async fn call(
        &mut self,
        req: &Request<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<(Reply, Vec<Vec<u8>>), WarmFailure> {
        self.child = None;
        let mut line = serde_json::to_vec(req).map_err(|e| fail(e.to_string()))?;
        line.push(b'\n');
        let input = self.input.get_mut().unwrap_or_else(|e| e.into_inner());
        let write = async {
            input.write_all(&line).await?;
            input.flush().await
        };
        tokio::time::timeout_at(deadline, write)
            .await
            .map_err(|_| fail("the server does not read its requests"))?
            .map_err(|e| fail(format!("cannot write to the server: {e}")))?;
        loop {
            let f = self.next_frame(deadline).await?;
            let kind = f.header.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            let id = f.header.get("id").and_then(|k| k.as_str());
            match kind {
                "started" if id == Some(req.id) => {
                    self.child = f
                        .header
                        .get("pid")
                        .and_then(|p| p.as_u64())
                        .and_then(|p| u32::try_from(p).ok());
                }
                "reply" if id == Some(req.id) => {
                    let reply: Reply = serde_json::from_value(f.header)
                        .map_err(|e| fail(format!("the server's reply is malformed: {e}")))?;
                    return Ok((reply, f.blobs));
                }
                "error" => {
                    return Err(fail(format!(
                        "the server refused the request: {}",
                        f.header.get("error").and_then(|e| e.as_str()).unwrap_or("")
                    )));
                }
                _ => {
                    return Err(fail(format!(
                        "the server sent an unexpected `{kind}` frame"
                    )));
                }
            }
        }
    }

    /// Closes the request stream: an idle server exits on its own.
    pub async fn close(mut self) {
        let input = self.input.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = tokio::time::timeout(Duration::from_secs(2), input.shutdown()).await;
    }
}

/// What a reply is checked against.
pub(crate) struct Expect<'a> {
    pub id: &'a str,
    pub cap: usize,
    pub fcap: usize,
    pub collect: &'a [String],
    pub timeout: Duration,
    /// The OOM-kill count after the previous candidate.
    pub last_oom: u64,
    pub started: Instant,
}

/// The run as a fresh process would have reported it; refuses replies that break the
/// protocol's promises (so a confused or tampered server never decides a verdict).
pub(crate) fn to_result(
    reply: Reply,
    blobs: Vec<Vec<u8>>,
    e: &Expect<'_>,
) -> Result<RunResult, WarmFailure> {
    if reply.id != e.id {
        return Err(fail(format!(
            "reply for `{}`, expected `{}`",
            reply.id, e.id
        )));
    }
    if blobs.len() != 2 + reply.files.len() {
        return Err(fail("the reply's blobs do not match its files"));
    }
    if blobs[0].len() + blobs[1].len() > e.cap {
        return Err(fail("the reply holds more output than the cap"));
    }
    let mut collected = std::collections::BTreeMap::new();
    for (name, blob) in reply.files.iter().zip(&blobs[2..]) {
        if !e.collect.contains(name) || blob.len() > e.fcap {
            return Err(fail(format!("the reply holds an unexpected file `{name}`")));
        }
        if collected
            .insert(name.clone(), String::from_utf8_lossy(blob).into_owned())
            .is_some()
        {
            return Err(fail(format!("the reply holds `{name}` twice")));
        }
    }
    let (exit_code, signal) = match (reply.code, reply.signal) {
        (Some(c), None) => (Some(i32::try_from(c).unwrap_or(-1)), None),
        (None, Some(s)) if (1..=64).contains(&s) => (None, Some(s)),
        _ => return Err(fail("the reply has neither an exit code nor a signal")),
    };
    let oom_killed = reply
        .oom
        .is_some_and(|(before, after)| after > before.max(e.last_oom));
    let mut blobs = blobs.into_iter();
    let stdout = String::from_utf8_lossy(&blobs.next().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&blobs.next().unwrap_or_default()).into_owned();
    Ok(RunResult {
        exit_code,
        signal,
        timed_out: reply.timed_out && !oom_killed,
        oom_killed,
        stdout,
        stderr,
        output_truncated: reply.over_cap || reply.total > e.cap as u64,
        // The run's own time: not the starting of a collector that came first.
        duration: e
            .started
            .elapsed()
            .saturating_sub(Duration::try_from_secs_f64(reply.setup).unwrap_or_default()),
        timeout: e.timeout,
        output_cap: e.cap,
        collected,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_warning_is_told_once_a_minute() {
        let text = format!("test warning {:?}", std::thread::current().id());
        assert!(first_telling(&text));
        assert!(!first_telling(&text));
        assert!(first_telling(&format!("{text} (another)")));
    }

    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_plain_pytest_module_runs_are_served() {
        let a = argv(&["python3", "-m", "pytest", "-q", "--junitxml=r.xml"]);
        let (i, args, cwd) = pytest_invocation(&a).unwrap();
        assert_eq!((i, args, cwd), ("python3", &a[3..], ""));
        // `cd sub && python3 -m pytest ARGS`, as a user's command becomes.
        let mut sub = argv(&["sh", "-c", &cd_exec_line("backend/api")]);
        sub.extend(a.iter().cloned());
        assert_eq!(
            pytest_invocation(&sub),
            Some(("python3", &a[3..], "backend/api"))
        );
        for dir in ["../up", "/abs", "a b", "a/../b", "$HOME", ""] {
            let mut v = argv(&["sh", "-c", &cd_exec_line(dir)]);
            v.extend(a.iter().cloned());
            assert!(pytest_invocation(&v).is_none(), "{dir}");
        }
        assert!(pytest_invocation(&argv(&["/usr/bin/python3.11", "-m", "pytest"])).is_some());
        for no in [
            &["sh", "-c", "python3 -m pytest"][..],
            &["python3", "-X", "dev", "-m", "pytest"],
            &["python3", "-m", "unittest"],
            &["pytest", "-q"],
            &["python3x", "-m", "pytest"],
            &["python3.", "-m", "pytest"],
            &[],
        ] {
            assert!(pytest_invocation(&argv(no)).is_none(), "{no:?}");
        }
    }

    #[test]
    fn only_plain_node_test_runs_are_served() {
        let shell = |line: &str| crate::project::node_test_cmd(line);
        let (paths, through) = node_test_invocation(&shell("node --test")).unwrap();
        assert!(paths.is_empty() && through);
        let (paths, _) = node_test_invocation(&shell("node --test test/ spec/a.test.js")).unwrap();
        assert_eq!(paths, ["test/", "spec/a.test.js"]);
        let direct = argv(&["node", "--test", "--test-reporter=tap", "t"]);
        assert_eq!(
            node_test_invocation(&direct),
            Some((vec!["t".to_owned()], false))
        );
        assert!(matches!(
            served(&direct),
            Some(Served::NodeTest { shell: false, .. })
        ));
        for no in [
            "node --test test/*.js",
            "node --test --test-name-pattern=x",
            "node --test --test-only",
            "node --test && echo done",
            "node --test $DIR",
            "node  --test",
            "NODE_ENV=test node --test",
            "jest",
            "node test/run.js",
            "node --test --test-reporter=spec",
        ] {
            assert_eq!(node_test_invocation(&shell(no)), None, "{no}");
        }
        assert_eq!(
            node_test_invocation(&argv(&["sh", "-c", "node --test --test-reporter=tap"])),
            None,
            "only node_test_cmd's own line"
        );
        assert_eq!(node_test_invocation(&argv(&["node", "--test"])), None);
        let file = argv(&["node", "--test-reporter=tap", "test/a.test.js"]);
        assert_eq!(served(&file), Some(Served::NodeSpawn { argv: &file }));
        assert_eq!(served(&argv(&["node"])), None);
        assert_eq!(served(&argv(&["/usr/bin/node", "x.js"])), None);
    }

    #[test]
    fn frames_split_across_pushes_and_refuse_oversize() {
        let mut f = Frames::new(100);
        f.push(b"{\"kind\":\"reply\",\"blobs\":[3,0,2]}\nab");
        assert_eq!(f.next_frame().unwrap(), None);
        f.push(b"cxy{\"kind\":\"hello\",\"blobs\":[]}\n");
        let a = f.next_frame().unwrap().unwrap();
        assert_eq!(a.blobs, vec![b"abc".to_vec(), vec![], b"xy".to_vec()]);
        let b = f.next_frame().unwrap().unwrap();
        assert_eq!(b.header["kind"], "hello");
        assert_eq!(f.next_frame().unwrap(), None);
        let mut f = Frames::new(100);
        f.push(b"{\"blobs\":[101]}\n");
        assert!(f.next_frame().is_err());
        let mut f = Frames::new(100);
        f.push(b"not json\n");
        assert!(f.next_frame().is_err());
        let mut f = Frames::new(100);
        f.push(b"{\"blobs\":[18446744073709551615, 2]}\n");
        assert!(f.next_frame().is_err());
        let mut f = Frames::new(100);
        f.push(&vec![b'x'; MAX_HEADER + 1]);
        assert!(f.next_frame().is_err());
    }

    fn reply() -> Reply {
        Reply {
            id: "c1".into(),
            code: Some(1),
            signal: None,
            timed_out: false,
            over_cap: false,
            total: 5,
            oom: Some((2, 2)),
            files: vec!["r.xml".into()],
            clean: true,
            seconds: 0.1,
            marks: vec![],
            fast: None,
            setup: 0.0,
        }
    }

    #[test]
    fn replies_become_run_results_or_are_refused() {
        let collect = vec!["r.xml".to_owned()];
        let e = Expect {
            id: "c1",
            cap: 10,
            fcap: 8,
            collect: &collect,
            timeout: Duration::from_secs(5),
            last_oom: 0,
            started: Instant::now(),
        };
        let blobs = || vec![b"out".to_vec(), b"er".to_vec(), b"<x/>".to_vec()];
        let r = to_result(reply(), blobs(), &e).unwrap();
        assert_eq!(r.exit_code, Some(1));
        assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("out", "er"));
        assert_eq!(r.collected["r.xml"], "<x/>");
        assert!(!r.oom_killed && !r.timed_out && !r.output_truncated);
        assert_eq!(r.verdict(), "exited 1");

        let mut t = reply();
        t.code = None;
        t.signal = Some(9);
        t.timed_out = true;
        let r = to_result(t, blobs(), &e).unwrap();
        assert_eq!(r.verdict(), "killed after 5 s timeout");

        let mut o = reply();
        o.oom = Some((2, 3));
        o.code = None;
        o.signal = Some(9);
        assert!(to_result(o, blobs(), &e).unwrap().oom_killed);

        let mut c = reply();
        c.total = 11;
        assert!(to_result(c, blobs(), &e).unwrap().output_truncated);

        // Broken promises are failures, never verdicts.
        let mut bad = reply();
        bad.id = "c0".into();
        assert!(to_result(bad, blobs(), &e).is_err());
        let mut bad = reply();
        bad.files = vec!["/etc/passwd".into()];
        assert!(to_result(bad, blobs(), &e).is_err());
        assert!(to_result(reply(), vec![b"x".to_vec(); 2], &e).is_err());
        assert!(to_result(reply(), vec![vec![0; 8], vec![0; 3], vec![]], &e).is_err());
        let mut bad = reply();
        bad.code = None;
        assert!(to_result(bad, blobs(), &e).is_err());
        let mut bad = reply();
        bad.signal = Some(9);
        assert!(to_result(bad, blobs(), &e).is_err());
    }

    /// The golden fixtures of the protocol (`protocol/*.json`), shared with the servers' own
    /// tests (`tests/test_protocol.py`, `tests/protocol.test.js`).
    mod golden {
        use super::*;
        use serde_json::Value;

        const REQUESTS: &str = include_str!("../protocol/requests.json");
        const FRAMES: &str = include_str!("../protocol/frames.json");

        fn cases() -> Vec<Value> {
            let v: Value = serde_json::from_str(REQUESTS).unwrap();
            v["cases"].as_array().unwrap().clone()
        }

        fn frames() -> Vec<Value> {
            let v: Value = serde_json::from_str(FRAMES).unwrap();
            v["frames"].as_array().unwrap().clone()
        }

        fn case(name: &str) -> Value {
            cases()
                .into_iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no request case `{name}`"))
        }

        fn strings(v: &Value) -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        }

        fn blobs(f: &Value) -> Vec<Vec<u8>> {
            strings(&f["blobs"])
                .into_iter()
                .map(String::into_bytes)
                .collect()
        }

        /// The frame's bytes as a server writes them.
        fn wire(f: &Value) -> Vec<u8> {
            let mut w = serde_json::to_vec(&f["header"]).unwrap();
            w.push(b'\n');
            w.extend(blobs(f).concat());
            w
        }

        #[test]
        fn requests_encode_as_the_fixtures() {
            let pytest_args = argv(&["-q", "-p", "no:cacheprovider", "--junitxml=report.xml"]);
            let q = argv(&["-q"]);
            let report = argv(&["report.xml"]);
            let sub_report = argv(&["backend/api/report.xml"]);
            let changed = argv(&["src/calc.py"]);
            let paths = argv(&["test/", "spec/a.test.js"]);
            let spawned = argv(&["node", "--test-reporter=tap", "test/a.test.js"]);
            let req = |id, src, work, args, timeout, cap, kill_at, collect| Request {
                id,
                src: Some(src),
                work,
                args,
                timeout,
                cap,
                kill_at,
                collect,
                cwd: "",
                fcap: 4 << 20,
                shell: false,
                spawn: false,
                fast: None,
            };
            let built = [
                (
                    "pytest",
                    req(
                        "c1",
                        "/cands/c1",
                        "/work/c1",
                        &pytest_args,
                        60.0,
                        1 << 20,
                        5247488,
                        &report,
                    ),
                ),
                (
                    "pytest-collected",
                    Request {
                        fast: Some(FastRequest {
                            base: "/cands/base3",
                            work: "/work/base",
                            changed: &changed,
                        }),
                        ..req("c4", "/cands/c4", "/work/c4", &q, 12.5, 65536, 69632, &[])
                    },
                ),
                (
                    "pytest-in-subdir",
                    Request {
                        cwd: "backend/api",
                        ..req(
                            "c5",
                            "/cands/c5",
                            "/work/c5",
                            &q,
                            60.0,
                            1 << 20,
                            5247488,
                            &sub_report,
                        )
                    },
                ),
                (
                    "node-test-shell",
                    Request {
                        shell: true,
                        ..req(
                            "c2",
                            "/cands/c2",
                            "/work/c2",
                            &paths,
                            30.0,
                            1 << 20,
                            1052672,
                            &[],
                        )
                    },
                ),
                (
                    "node-spawn",
                    Request {
                        spawn: true,
                        ..req(
                            "c3",
                            "/cands/c3",
                            "/work/c3",
                            &spawned,
                            30.0,
                            1 << 20,
                            1052672,
                            &[],
                        )
                    },
                ),
            ];
            for (name, r) in &built {
                let c = case(name);
                assert_eq!(serde_json::to_value(r).unwrap(), c["request"], "{name}");
                // What the host sends, the server it goes to accepts.
                let server = if name.starts_with("pytest") {
                    "python"
                } else {
                    "node"
                };
                assert!(c[server].is_null(), "{name}: {server} refuses it");
            }
        }

        #[test]
        fn frames_decode_from_the_fixtures() {
            let all = frames();
            assert!(all.len() >= 10);
            for f in &all {
                let name = f["name"].as_str().unwrap();
                let mut frames = Frames::new(1 << 20);
                frames.push(&wire(f));
                let got = frames.next_frame().unwrap().unwrap();
                assert_eq!(got.header, f["header"], "{name}");
                assert_eq!(got.blobs, blobs(f), "{name}");
                assert_eq!(frames.next_frame().unwrap(), None, "{name}");
                match f["header"]["kind"].as_str().unwrap() {
                    "hello" => {
                        let h: Hello = serde_json::from_value(got.header).unwrap();
                        assert_eq!(Value::Bool(h.ready), f["header"]["ready"], "{name}");
                        let said = [h.error, h.python, h.pytest, h.node];
                        assert!(said.iter().any(Option::is_some), "{name}");
                    }
                    "started" => assert!(got.header["pid"].as_u64().is_some(), "{name}"),
                    "error" => assert!(got.header["error"].as_str().is_some(), "{name}"),
                    "reply" => reply_is_the_fixtures_result(f, got),
                    other => panic!("{name}: a frame of kind `{other}` reaches no host"),
                }
            }
        }

        fn reply_is_the_fixtures_result(f: &Value, got: Frame) {
            let name = f["name"].as_str().unwrap();
            let reply: Reply = serde_json::from_value(got.header).unwrap();
            let h = &f["header"];
            assert_eq!(reply.fast.as_deref(), h["fast"].as_str(), "{name}");
            assert_eq!(reply.setup, h["setup"].as_f64().unwrap_or(0.0), "{name}");
            assert_eq!(reply.clean, h["clean"].as_bool().unwrap(), "{name}");
            let req = &case(f["request"].as_str().unwrap())["request"];
            let collect = strings(&req["collect"]);
            let e = Expect {
                id: req["id"].as_str().unwrap(),
                cap: req["cap"].as_u64().unwrap() as usize,
                fcap: req["fcap"].as_u64().unwrap() as usize,
                collect: &collect,
                timeout: Duration::from_secs_f64(req["timeout"].as_f64().unwrap()),
                last_oom: 0,
                started: Instant::now(),
            };
            let r = to_result(reply, got.blobs, &e).unwrap();
            let want = &f["result"];
            assert_eq!(
                r.exit_code.map(i64::from),
                want["exit_code"].as_i64(),
                "{name}"
            );
            assert_eq!(r.signal.map(i64::from), want["signal"].as_i64(), "{name}");
            assert_eq!(Value::Bool(r.timed_out), want["timed_out"], "{name}");
            assert_eq!(Value::Bool(r.oom_killed), want["oom_killed"], "{name}");
            assert_eq!(
                Value::Bool(r.output_truncated),
                want["output_truncated"],
                "{name}"
            );
            assert_eq!(
                serde_json::to_value(&r.collected).unwrap(),
                want["collected"],
                "{name}"
            );
            let out = String::from_utf8(blobs(f)[0].clone()).unwrap();
            assert_eq!(r.stdout, out, "{name}");
        }

        /// The client's side of one call, over in-memory streams carrying fixture frames.
        async fn call_with(frames: &[&str]) -> Result<(Reply, Vec<Vec<u8>>), WarmFailure> {
            let all = self::frames();
            let chunks: Vec<Chunk> = frames
                .iter()
                .map(|n| {
                    let f = all.iter().find(|f| f["name"] == *n).unwrap();
                    Chunk::Out(Bytes::from(wire(f)))
                })
                .collect();
            let mut ch = Channel::new(
                Box::pin(tokio::io::sink()),
                Box::pin(futures::stream::iter(chunks)),
                1 << 20,
            );
            let collect = argv(&["report.xml"]);
            let args = argv(&["-q"]);
            let req = Request {
                id: "c1",
                src: Some("/cands/c1"),
                work: "/work/c1",
                args: &args,
                cwd: "",
                timeout: 60.0,
                cap: 1 << 20,
                kill_at: 1 << 20,
                collect: &collect,
                fcap: 4 << 20,
                shell: false,
                spawn: false,
                fast: None,
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let r = ch.call(&req, deadline).await;
            if frames.contains(&"started") {
                assert_eq!(ch.child, Some(42));
            }
            r
        }

        #[tokio::test]
        async fn the_client_reads_fixture_frames_as_replies_or_failures() {
            let (reply, blobs) = call_with(&["started", "reply-exited"]).await.unwrap();
            assert_eq!(
                (reply.id.as_str(), reply.code, blobs.len()),
                ("c1", Some(1), 3)
            );
            let refused = call_with(&["error-bad-request"]).await.unwrap_err();
            assert_eq!(
                refused.0,
                "the server refused the request: bad request: work, args, timeout"
            );
            let other = call_with(&["reply-timed-out"]).await.unwrap_err();
            assert_eq!(other.0, "the server sent an unexpected `reply` frame");
            let gone = call_with(&["started"]).await.unwrap_err();
            assert_eq!(gone.0, "the server exited");
        }

        #[tokio::test]
        async fn the_client_greets_fixture_hellos() {
            for (name, want) in [
                ("hello-python", Ok("python 3.11.2, pytest 7.2.1".to_owned())),
                ("hello-node", Ok("node v18.19.0".to_owned())),
                (
                    "hello-cannot-run",
                    Err(format!(
                        "{CANNOT_RUN}: cannot import pytest: ModuleNotFoundError(\"No module named 'pytest'\")"
                    )),
                ),
            ] {
                let f = frames().into_iter().find(|f| f["name"] == name).unwrap();
                let mut ch = Channel::new(
                    Box::pin(tokio::io::sink()),
                    Box::pin(futures::stream::iter([Chunk::Out(Bytes::from(wire(&f)))])),
                    1 << 20,
                );
                assert_eq!(ch.hello().await.map_err(|e| e.0), want, "{name}");
            }
        }
    }
}
