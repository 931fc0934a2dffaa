// coval's warm node server (pipeline::sandbox::warm): started once per repair session
// inside the sandbox, as the candidates' user, with exactly the session's environment. For
// each candidate it copies the candidate into a fresh work dir and then either
// - is the test runner that `node --test --test-reporter=tap PATHS` would start, kept alive:
//   it goes to the work dir and calls node's own runner (`run()` from node:test, the function
//   `node --test` calls, with node's own file discovery) with the TAP reporter. The runner
//   starts every test file as a fresh node process, as `node --test` does; no candidate code
//   runs in this process. What a fresh runner costs (starting node, loading the runner: about
//   half of a candidate here) is paid once; or
// - (`spawn`) starts exactly the `node ARGS` it was given as a fresh process there, as the
//   sandbox's wrapper would, without a `docker exec` of its own.
//
// The server must not be reachable from the candidates it runs as the same user: it only
// starts from a copy of node that the user may execute but not read, which makes the kernel
// mark the process non-dumpable (no ptrace, no /proc/PID/mem or /proc/PID/fd for the user);
// it checks that before saying it is ready. After each candidate every other process of the
// user is killed and the work areas are wiped, as the fresh path's wrapper does.
//
// Protocol (the same as warm_server.py's): fd 0 carries requests, one JSON object per line;
// fd 1 carries frames: one JSON header line whose "blobs" lists the byte lengths of the raw
// blobs that follow it. Nothing else is ever written to fd 1.
//
// argv: coval-warm-node --node PATH [--sweep] [--oom] [--wipe DIR ...]
//
// Run as `node -e NODE_SERVER` (or as a script) it serves; required (by the protocol's tests,
// tests/protocol.test.js) it only defines its functions and exports the protocol's.
'use strict';

const fs = require('fs');
const path = require('path');
const childProcess = require('child_process');

const ARGS = process.argv.slice(1);
if (ARGS[0] === 'coval-warm-node') ARGS.shift();
const SWEEP = ARGS.includes('--sweep');
const OOM = ARGS.includes('--oom');
const WIPE = ARGS.includes('--wipe') ? ARGS.slice(ARGS.indexOf('--wipe') + 1) : [];
const NODE = ARGS.includes('--node') ? ARGS[ARGS.indexOf('--node') + 1] : '/usr/bin/node';
const MY_PID = process.pid;
const MY_UID = process.getuid();
// The session's environment, as the server was started with it.
const BASE_ENV = { ...process.env };
// `node -e` has no main module; a script run directly is its own.
const MAIN = require.main === undefined || require.main === module;

// Stray prints (ours or the runner's) must never reach the protocol on fd 1.
if (MAIN) for (const k of ['log', 'info', 'debug', 'dir', 'table']) console[k] = console.error;

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      pause(2);
    }
  }
}

/** The bytes of one frame: the header line, with the blobs' lengths, then the blobs. */
function frame(header, blobs = []) {
  const h = { ...header, blobs: blobs.map((b) => b.length) };
  return Buffer.concat([Buffer.from(JSON.stringify(h) + '\n'), ...blobs]);
}

function send(header, blobs = []) {
  writeAll(1, frame(header, blobs));
}

function failStart(why) {
  send({ kind: 'hello', ready: false, error: why });
  process.exit(3);
}

function oomCount() {
  for (const f of ['/sys/fs/cgroup/memory/memory.oom_control', '/sys/fs/cgroup/memory.events']) {
    let text;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      if (line.startsWith('oom_kill ')) return Number.parseInt(line.split(' ')[1], 10) || 0;
    }
  }
  return 0;
}

/** The pids of live (not zombie) processes of this user other than the server. */
function others(first = false) {
  const found = [];
  let names = [];
  try {
    names = fs.readdirSync('/proc');
  } catch {
    return found;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === MY_PID || pid === 1) continue;
    let text;
    try {
      text = fs.readFileSync(`/proc/${name}/status`, 'utf8');
    } catch {
      continue;
    }
    const uid = /^Uid:\s+(\d+)/m.exec(text);
    const state = /^State:\s+(\S)/m.exec(text);
    if (uid && Number(uid[1]) === MY_UID && !(state && state[1] === 'Z')) {
      found.push(pid);
      if (first) break;
    }
  }
  return found;
}

function pause(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** SIGKILL to every process this user may signal but the server; true when none is left. */
function sweep() {
  for (let i = 0; i < 300; i++) {
    try {
      process.kill(-1, 'SIGKILL'); // kill(-1) spares the caller
    } catch {
      // ESRCH: nobody left to signal
    }
    if (others(true).length === 0) return true;
    pause(10);
  }
  return false;
}

/** Removes `p` even where a candidate took away its owner's write or search permission. */
function remove(p) {
  try {
    fs.rmSync(p, { recursive: true, force: true });
    return;
  } catch {
    // fall through: open up the tree and try again
  }
  const open = (q) => {
    let st;
    try {
      st = fs.lstatSync(q);
    } catch {
      return;
    }
    if (!st.isDirectory()) return;
    try {
      fs.chmodSync(q, 0o700);
    } catch {
      return;
    }
    let entries = [];
    try {
      entries = fs.readdirSync(q);
    } catch {
      return;
    }
    for (const e of entries) open(path.join(q, e));
  };
  open(p);
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch {
    // reported by wipe()'s final check
  }
}

/** Empties the work areas; true when nothing is left in them. */
function wipe() {
  let clean = true;
  for (const d of WIPE) {
    let entries;
    try {
      entries = fs.readdirSync(d);
    } catch {
      continue;
    }
    for (const e of entries) remove(path.join(d, e));
    try {
      if (fs.readdirSync(d).length > 0) clean = false;
    } catch {
      // the area itself went away: nothing in it
    }
  }
  return clean;
}

/** A regular file under root (no symlink on the way), at most cap bytes, or null. */
function readCollected(root, rel, cap) {
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) return null;
  let p = root;
  let st;
  for (const part of parts) {
    p = path.join(p, part);
    try {
      st = fs.lstatSync(p);
    } catch {
      return null;
    }
    if (st.isSymbolicLink()) return null;
  }
  if (!st.isFile()) return null;
  let fd;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const chunks = [];
    let n = 0;
    while (n < cap) {
      const b = Buffer.alloc(Math.min(1 << 16, cap - n));
      const got = fs.readSync(fd, b, 0, b.length, null);
      if (got === 0) break;
      chunks.push(b.subarray(0, got));
      n += got;
    }
    return Buffer.concat(chunks);
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/** Where `node` resolves on `pathVar` (as a shell would find it), or null. */
function which(pathVar, cwd) {
  for (const dir of (pathVar || '').split(':')) {
    const p = path.resolve(cwd, dir || '.', 'node');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return null;
}

function sameFile(a, b) {
  try {
    const x = fs.statSync(a);
    const y = fs.statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

// ---- start: refuse to run where the server could be reached or would run another node ----

let runner;
let tapReporter;
function start() {
  try {
    runner = require('node:test');
    tapReporter = require('node:test/reporters').tap;
  } catch (e) {
    failStart(`this node has no test runner with reporters (node:test): ${e.message}`);
  }
  if (typeof runner.run !== 'function' || typeof tapReporter !== 'function') {
    failStart('this node has no run() in node:test');
  }
  if (MY_UID === 0) failStart('the server does not run as root');
  try {
    // The files of a non-dumpable process's /proc dir belong to root.
    if (fs.statSync(`/proc/${MY_PID}/mem`).uid === MY_UID) {
      failStart(`the server's node (${process.execPath}) is readable by its user, so its process is reachable (ptrace, /proc) by the candidates`);
    }
  } catch (e) {
    failStart(`cannot inspect /proc: ${e.message}`);
  }
  const sessionNode = which(BASE_ENV.PATH, '/');
  if (!sessionNode || !sameFile(sessionNode, NODE)) {
    failStart(`\`node\` on the session's PATH is ${sessionNode || 'missing'}, not ${NODE}`);
  }
  // The runner starts test files with process.execPath and process.execArgv: the node a fresh
  // `node --test` would be, with no flags of ours.
  process.execArgv.length = 0;
  process.execPath = sessionNode;
  if (process.execPath !== sessionNode) failStart('cannot set the runner\'s node path');
}
if (MAIN) start();

// ---- one candidate ----

const EVENTS = ['uncaughtException', 'unhandledRejection', 'beforeExit', 'exit', 'SIGINT', 'SIGTERM', 'warning'];

class Unservable extends Error {}

function invalid(req) {
  if (req === null || typeof req !== 'object' || Array.isArray(req)) return 'not an object';
  const strs = (v) => Array.isArray(v) && v.every((a) => typeof a === 'string');
  const num = (v) => typeof v === 'number' && v > 0;
  const checks = [
    ['id', typeof req.id === 'string'],
    ['work', typeof req.work === 'string' && req.work.startsWith('/')],
    ['src', typeof req.src === 'string' && req.src.startsWith('/')],
    ['args', strs(req.args) && (req.spawn === true ? req.args[0] === 'node' : req.args.every((a) => a !== '' && !a.startsWith('-')))],
    ['spawn', req.spawn === undefined || typeof req.spawn === 'boolean'],
    ['collect', req.collect === undefined || strs(req.collect)],
    ['timeout', num(req.timeout)],
    ['cap', num(req.cap)],
    ['fcap', req.fcap === undefined || num(req.fcap)],
    ['kill_at', req.kill_at === undefined || num(req.kill_at)],
    ['shell', req.shell === undefined || typeof req.shell === 'boolean'],
  ];
  const bad = checks.filter(([, ok]) => !ok).map(([k]) => k);
  return bad.length ? bad.join(', ') : null;
}

/** Output kept up to `cap` (stdout and stderr together), counted beyond; `over` past killAt. */
class Sink {
  constructor(cap, killAt) {
    this.cap = cap;
    this.killAt = killAt;
    this.kept = { out: [], err: [] };
    this.keptLen = 0;
    this.total = 0;
    this.over = false;
  }

  take(which, d) {
    const b = Buffer.isBuffer(d) ? d : Buffer.from(String(d));
    this.total += b.length;
    const room = Math.max(0, this.cap - this.keptLen);
    if (room > 0) {
      const part = b.subarray(0, room);
      this.kept[which].push(part);
      this.keptLen += part.length;
    }
    if (this.total > this.killAt) this.over = true;
    return this.over;
  }
}

/**
 * How a run ended: 'end', 'timeout' (at `deadline`) or 'over' (past the sink's kill point).
 * `wire(take, finish, isDone)` connects the run's output (`take(which, data)`) and its end
 * (`finish('end')`); nothing is taken once it has ended.
 */
function watch(deadline, sink, wire) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (how) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        resolve(how);
      }
    };
    const timer = setTimeout(() => finish('timeout'), Math.max(1, deadline - Date.now()));
    const take = (which, d) => {
      if (!done && sink.take(which, d)) finish('over');
    };
    wire(take, finish, () => done);
  });
}

/**
 * `node --test --test-reporter=tap PATHS` in this process: node's runner, its test files as
 * fresh processes. Resolves to the exit code a fresh runner would give (1 when a test failed),
 * or null when stopped by the timeout or the output cap.
 */
async function runRunner(req, work, env, sink, deadline, stop) {
  const saved = {
    cwd: process.cwd(),
    argv: process.argv,
    env: process.env,
    exit: process.exit,
    exitCode: process.exitCode,
    listeners: Object.fromEntries(EVENTS.map((e) => [e, process.listeners(e)])),
  };
  let stream;
  // Aborted when the run is stopped: the runner then cancels the files it has not started
  // yet instead of starting them during the next candidate.
  const abort = new AbortController();
  try {
    process.chdir(work);
    process.env = env;
    // node's file discovery reads the paths from process.argv, as in a runner process.
    process.argv = [process.execPath, ...req.args];
    process.exit = () => {
      throw new Unservable('the runner tried to exit (a test path that does not exist?)');
    };
    stream = runner.run({ concurrency: true, signal: abort.signal });
  } catch (e) {
    restore(saved);
    throw e instanceof Unservable ? e : new Unservable(`the runner did not start: ${e && e.message}`);
  }
  let failed = false;
  stream.on('test:fail', () => {
    failed = true;
  });
  const reported = stream.compose(tapReporter);
  // A run stopped by the timeout or the output cap ends where a fresh runner, killed with its
  // test files, would end: with what it had printed by then, and nothing it would report
  // about the killed files afterwards.
  const ended = await watch(deadline, sink, (take, finish, isDone) => {
    reported.on('data', (d) => take('out', d));
    reported.on('end', () => finish('end'));
    reported.on('error', (e) => {
      if (isDone()) return;
      take('err', `coval-sandbox: the test runner failed: ${e && e.message}\n`);
      failed = true;
      finish('end');
    });
  });
  if (ended !== 'end') {
    abort.abort();
    stop(ended);
  }
  restore(saved);
  return ended === 'end' ? { code: failed ? 1 : 0, signal: null } : null;
}

/** Any other `node ARGS`: exactly that command as a fresh process, as `env -i ENV node ARGS`. */
async function runSpawned(req, work, env, sink, deadline, stop) {
  let child;
  try {
    child = childProcess.spawn(NODE, req.args.slice(1), {
      argv0: 'node',
      cwd: work,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
  } catch (e) {
    throw new Unservable(`cannot start node: ${e && e.message}`);
  }
  const exited = new Promise((resolve) => {
    child.on('error', () => resolve({ code: 127, signal: null }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  const ended = await watch(deadline, sink, (take, finish) => {
    child.stdout.on('data', (d) => take('out', d));
    child.stderr.on('data', (d) => take('err', d));
    exited.then(() => finish('end'));
  });
  if (ended !== 'end') {
    stop(ended);
    return null;
  }
  const { code, signal } = await exited;
  return { code, signal: signal ? osSignal(signal) : null };
}

function osSignal(name) {
  const n = require('os').constants.signals[name];
  return typeof n === 'number' ? n : 9;
}

async function runOne(req) {
  const started = process.hrtime.bigint();
  const secs = () => Number(process.hrtime.bigint() - started) / 1e9;
  const deadline = Date.now() + req.timeout * 1000;
  const marks = [];
  const mark = (name) => marks.push([name, Math.round(secs() * 1e4) / 1e4]);
  const cap = Math.floor(req.cap);
  const sink = new Sink(cap, Math.max(cap, Math.floor(req.kill_at || cap)));
  const work = req.work;
  const wipedBefore = wipe();
  const oomBefore = OOM ? oomCount() : 0;
  mark('wiped');

  let timedOut = false;
  const stop = (why) => {
    timedOut = why === 'timeout';
    if (SWEEP) sweep();
  };
  const copy = childProcess.spawnSync('/bin/sh', ['-c', 'mkdir "$1" && cp -a "$2/." "$1/"', 'coval-copy', work, req.src], {
    cwd: '/',
    env: BASE_ENV,
    stdio: 'ignore',
  });
  mark('copied');
  const env = { ...BASE_ENV };
  if (req.shell) {
    // `sh -c 'PATH="$PWD/node_modules/.bin:$PATH"; node --test ...'`: the shell exports PWD.
    env.PATH = `${work}/node_modules/.bin:${BASE_ENV.PATH || ''}`;
    env.PWD = work;
  }
  let status;
  if (copy.status !== 0) {
    sink.take('err', 'coval-sandbox: cannot copy the project into the work area (larger than the tmpfs?)\n');
    status = { code: 125, signal: null };
  } else {
    const local = which(env.PATH, work);
    if (!local || !sameFile(local, NODE)) {
      throw new Unservable(`\`node\` resolves to ${local || 'nothing'} in this candidate, not ${NODE}`);
    }
    status = await (req.spawn ? runSpawned : runRunner)(req, work, env, sink, deadline, stop);
  }
  mark('exited');
  const swept = SWEEP ? sweep() : true;
  mark('killed');
  const files = [];
  const blobs = [Buffer.concat(sink.kept.out), Buffer.concat(sink.kept.err)];
  for (const rel of req.collect || []) {
    const data = readCollected(work, rel, Math.floor(req.fcap || 4 << 20));
    if (data !== null) {
      files.push(rel);
      blobs.push(data);
    }
  }
  const oomAfter = OOM ? oomCount() : 0;
  const wipedAfter = wipe();
  mark('done');
  return [
    replyHeader(req.id, status, {
      timedOut,
      overCap: sink.over,
      total: sink.total,
      oom: OOM ? [oomBefore, oomAfter] : null,
      files,
      clean: Boolean(wipedBefore && wipedAfter && swept),
      seconds: secs(),
      marks,
    }),
    blobs,
  ];
}

/** The header of a reply frame for a run that ended with `status` ({code, signal}), or null. */
function replyHeader(id, status, { timedOut, overCap, total, oom, files, clean, seconds, marks }) {
  // A run stopped by the timeout or the output cap ends as the fresh path's `timeout -s KILL`
  // or kill would end it: killed by SIGKILL.
  return {
    kind: 'reply',
    id,
    code: status ? status.code : null,
    signal: status ? status.signal : 9,
    timed_out: timedOut,
    over_cap: overCap,
    total,
    oom,
    files,
    clean,
    seconds,
    marks,
  };
}

function restore(saved) {
  try {
    process.chdir(saved.cwd);
  } catch {
    process.chdir('/');
  }
  process.argv = saved.argv;
  process.env = saved.env;
  process.exit = saved.exit;
  process.exitCode = saved.exitCode;
  // Each run's harness adds process listeners; the next run must start without them.
  for (const e of EVENTS) {
    for (const l of process.listeners(e)) {
      if (!saved.listeners[e].includes(l)) process.removeListener(e, l);
    }
  }
}

// ---- the request loop ----

let inbuf = Buffer.alloc(0);

/** The next request line on `fd` (the protocol's stdin), parsed; null at its end. */
function readRequest(fd = 0) {
  for (;;) {
    const nl = inbuf.indexOf(10);
    if (nl >= 0) {
      const line = inbuf.subarray(0, nl);
      inbuf = inbuf.subarray(nl + 1);
      return JSON.parse(line.toString('utf8'));
    }
    const b = Buffer.alloc(1 << 16);
    let n;
    try {
      n = fs.readSync(fd, b, 0, b.length, null);
    } catch (e) {
      if (e.code === 'EAGAIN') {
        pause(2);
        continue;
      }
      if (e.code === 'EOF') return null;
      throw e;
    }
    if (n === 0) return null;
    inbuf = Buffer.concat([inbuf, b.subarray(0, n)]);
    if (inbuf.length > 16 << 20) return null;
  }
}

async function serve() {
  send({ kind: 'hello', ready: true, node: process.version, pid: MY_PID });
  for (;;) {
    let req;
    try {
      req = readRequest();
    } catch (e) {
      send({ kind: 'error', error: `bad request: ${e.message}` });
      return 2;
    }
    if (req === null) return 0;
    const why = invalid(req);
    if (why) {
      send({ kind: 'error', id: req && typeof req === 'object' ? req.id ?? null : null, error: `bad request: ${why}` });
      continue;
    }
    try {
      const [header, blobs] = await runOne(req);
      send(header, blobs);
    } catch (e) {
      const swept = SWEEP ? sweep() : true;
      wipe();
      send({ kind: 'error', id: req.id, error: `cannot serve this candidate: ${e && e.message}${swept ? '' : ' (and its processes survive)'}` });
    }
  }
}

if (MAIN) {
  serve().then(
    (code) => process.exit(code),
    (e) => {
      console.error(`coval-warm-node: ${e && e.stack}`);
      process.exit(70);
    },
  );
}

module.exports = { frame, invalid, readRequest, replyHeader };
