# coval's warm pytest server (pipeline::sandbox::warm): started once per repair session inside
# the sandbox, as the candidates' user, with exactly the session's environment. It imports
# pytest and pytest's own plugins once; for each candidate it forks, and the child copies the
# candidate into a fresh work dir, becomes its own session and process group, and runs
# `python -m pytest ARGS` there as a fresh interpreter would. The parent never imports project
# code: each child starts from the same pristine state. After the child, the whole group (and,
# with --sweep, every other process of this user) is killed and the work areas are wiped.
#
# Protocol: fd 0 carries requests, one JSON object per line; fd 1 carries frames: one JSON
# header line whose "blobs" lists the byte lengths of the raw blobs that follow it. Nothing
# else is ever written to fd 1 (the server points fd 1 at its stderr for stray prints).
#
# argv: coval-warm [--sweep] [--oom] [--wipe DIR ...]
#
# Run as `python3 -c SERVER` it is `__main__` and serves; imported (by the protocol's tests,
# tests/test_protocol.py) it only defines its functions and touches no file descriptor.

import os
import sys

MAIN = __name__ == "__main__"

# `python3 -c` puts '' (the current dir) first on sys.path; the parent imports nothing from
# there, and each child puts its own work dir first, as `python3 -m` would.
if MAIN and sys.path and sys.path[0] in ("", "."):
    del sys.path[0]

if MAIN:
    PROTO_IN = os.dup(0)
    PROTO_OUT = os.dup(1)
    _null = os.open(os.devnull, os.O_RDWR)
    os.dup2(_null, 0)
    os.dup2(2, 1)
    os.close(_null)


def frame(header, blobs=()):
    """The bytes of one frame: the header line, with the blobs' lengths, then the blobs."""
    import json as _json

    blobs = [bytes(b) for b in blobs]
    header = dict(header)
    header["blobs"] = [len(b) for b in blobs]
    return _json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(blobs)


def send(header, blobs=()):
    data = frame(header, blobs)
    view = memoryview(data)
    while view:
        n = os.write(PROTO_OUT, view)
        view = view[n:]


def fail_start(why):
    send({"kind": "hello", "ready": False, "error": why})
    sys.exit(3)


try:
    import ctypes
    import json
    import selectors
    import shutil
    import signal
    import stat
    import time

    _libc = ctypes.CDLL(None, use_errno=True)
except Exception as e:  # noqa: BLE001 - any failure means "no warm server here"
    fail_start(f"cannot load the server's modules: {e!r}")

PR_SET_DUMPABLE = 4


def set_dumpable(on):
    return _libc.prctl(PR_SET_DUMPABLE, 1 if on else 0, 0, 0, 0) == 0


# Not dumpable: candidates (same user) can neither ptrace this process nor open its memory or
# its file descriptors through /proc. They can still signal it; the host notices and falls back.
if MAIN and not set_dumpable(False):
    fail_start("prctl(PR_SET_DUMPABLE, 0) failed")

try:
    import pytest
    import _pytest.config

    # pytest's built-in plugins are pytest, not project code: import them once here.
    for _name in _pytest.config.default_plugins:
        try:
            __import__("_pytest." + _name)
        except Exception:  # noqa: BLE001 - a plugin pytest itself may skip
            pass
    # Standard-library modules a pytest run imports on demand (pyproject parsing, --pdb
    # support, faulthandler): nothing of the project, so every child may share them.
    for _name in ("tomllib", "pdb", "faulthandler", "_pytest.config.compat", "_pytest._argcomplete"):
        try:
            __import__(_name)
        except Exception:  # noqa: BLE001 - older Pythons lack tomllib, older pytests compat
            pass
    # inspect.getmodule() caches the file of every loaded module the first time it has to
    # search them (pytest's tracebacks do): fill that cache once for the modules loaded so
    # far, so a child only adds its own.
    import inspect

    inspect.getmodule(compile("", "<coval-warm>", "exec"), "<coval-warm>")
    # What `python -m pytest` puts in sys.argv[0].
    PYTEST_MAIN = os.path.join(os.path.dirname(pytest.__file__), "__main__.py")
except Exception as e:  # noqa: BLE001
    fail_start(f"cannot import pytest: {e!r}")

ARGS = sys.argv[1:]
if ARGS and ARGS[0] == "coval-warm":
    ARGS = ARGS[1:]
SWEEP = "--sweep" in ARGS
OOM = "--oom" in ARGS
WIPE = ARGS[ARGS.index("--wipe") + 1:] if "--wipe" in ARGS else []
MY_UID = os.getuid()
MY_PID = os.getpid()


def oom_count():
    for f in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(f) as fh:
                for line in fh:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


# Wait statuses of children reaped by reap_children, by pid (the candidate's is needed later).
REAPED = {}


def reap_children():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        REAPED[pid] = status


def others_alive():
    """Whether a live (not zombie) process of this user other than the server is left."""
    return bool(others(first=True))


def others(spare=(), first=False):
    """The pids of live processes of this user other than the server and `spare`."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) in (MY_PID, 1) or int(name) in spare:
            continue
        try:
            with open(f"/proc/{name}/status") as fh:
                text = fh.read()
        except OSError:
            continue
        uid = state = None
        for line in text.splitlines():
            if line.startswith("Uid:"):
                parts = line.split()
                uid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            elif line.startswith("State:"):
                state = line.split()[1] if len(line.split()) > 1 else None
        if uid == MY_UID and state != "Z":
            found.append(int(name))
            if first:
                break
    return found


def sweep(spare=()):
    """SIGKILL to every process this user may signal but the server; True when none is left.
    With `spare` (the collector), one by one around it; if that does not end them, to all."""
    if spare:
        for _ in range(50):
            pids = others(spare)
            if not pids:
                return True
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            reap_children()
            time.sleep(0.002)
    for _ in range(300):
        try:
            os.kill(-1, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        reap_children()
        if not others_alive():
            return True
        time.sleep(0.01)
    return False


def _make_removable(func, path, _exc):
    # A candidate may leave a directory without write or search permission for its owner.
    parent = os.path.dirname(path)
    for p in (parent, path):
        try:
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(p, 0o700)
        except OSError:
            pass
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def wipe(keep=None):
    """Empties the work areas (all but the path `keep`); True when nothing else is left."""
    clean = True
    for d in WIPE:
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for e in entries:
            p = os.path.join(d, e)
            if p == keep:
                continue
            try:
                if stat.S_ISDIR(os.lstat(p).st_mode):
                    shutil.rmtree(p, onerror=_make_removable)
                else:
                    os.unlink(p)
            except OSError:
                pass
        try:
            if [e for e in os.listdir(d) if os.path.join(d, e) != keep]:
                clean = False
        except OSError:
            pass
    return clean


def read_collected(root, rel, cap):
    """A regular file under root (no symlink on the way), at most cap bytes, or None."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    path = root
    for p in parts:
        path = os.path.join(path, p)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        chunks, n = [], 0
        while n < cap:
            b = os.read(fd, min(1 << 16, cap - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


class Child(BaseException):
    """Raised in the forked child to leave the server loop with the request to run."""

    def __init__(self, req, out_w, err_w):
        super().__init__()
        self.req, self.out_w, self.err_w = req, out_w, err_w


def read_request(buf):
    while b"\n" not in buf:
        b = os.read(PROTO_IN, 1 << 16)
        if not b:
            return None, buf
        buf += b
        if len(buf) > (16 << 20):
            return None, b""
    line, _, rest = buf.partition(b"\n")
    return json.loads(line), rest


def run_one(req, fast=None):
    """Forks the child for `req` and watches it; returns the reply frame (parent only).
    In the collector (`fast`: the code swaps), the child continues the collected pytest
    session instead, and the server does the sweeping and wiping around the call."""
    started = time.monotonic()
    marks = []

    def mark(name):
        marks.append((name, round(time.monotonic() - started, 4)))

    timeout = float(req["timeout"])
    cap = int(req["cap"])
    # Killed only beyond this many bytes (the fresh path's own slack); kept: `cap`.
    kill_at = max(cap, int(req.get("kill_at", cap)))
    work = req["work"]
    wiped_before = wipe(keep=base_work()) if fast is None else True
    oom_before = oom_count() if OOM else 0
    mark("wiped")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        if fast is not None:
            raise FastChild(req, out_w, err_w, fast)
        raise Child(req, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    # The child's pid is its process group: the host can kill it if this server stops answering.
    send({"kind": "started", "id": req["id"], "pid": pid})
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ, "out")
    sel.register(err_r, selectors.EVENT_READ, "err")
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ, "exit")
    kept = {"out": bytearray(), "err": bytearray()}
    total = 0
    over = False
    status = None
    timed_out = False
    deadline = started + timeout
    open_pipes = {"out", "err"}

    def take(which, fd):
        nonlocal total, over
        try:
            b = os.read(fd, 1 << 16)
        except OSError:
            b = b""
        if not b:
            sel.unregister(fd)
            open_pipes.discard(which)
            return
        room = max(0, cap - len(kept["out"]) - len(kept["err"]))
        kept[which] += b[:room]
        total += len(b)
        if total > kill_at:
            over = True

    while status is None and not over:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        wait = left if pidfd is not None else min(left, 0.02)
        for key, _ in sel.select(wait):
            if key.data == "exit":
                sel.unregister(pidfd)
            else:
                take(key.data, key.fd)
        got, st = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            status = st
    mark("exited")
    # Whatever is left of the candidate dies now (the child itself first: it may not have
    # made its own group yet).
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    swept = sweep(spare=collector_pids()) if SWEEP and fast is None else True
    if status is None:
        status = REAPED.pop(pid, None)
    if status is None:
        _, status = os.waitpid(pid, 0)
    reap_children()
    REAPED.clear()
    mark("killed")
    # Drain what the dead processes wrote; escaped ones (no sweep) get a short grace.
    drain_until = time.monotonic() + 2.0
    while open_pipes and not over:
        left = drain_until - time.monotonic()
        if left <= 0:
            break
        events = sel.select(left)
        if not events:
            break
        for key, _ in events:
            if key.data in open_pipes:
                take(key.data, key.fd)
    sel.close()
    for fd in (out_r, err_r, pidfd):
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    mark("drained")
    files, blobs = [], [kept["out"], kept["err"]]
    for rel in req.get("collect", []):
        data = read_collected(work, rel, int(req.get("fcap", 4 << 20)))
        if data is not None:
            files.append(rel)
            blobs.append(data)
    oom_after = oom_count() if OOM else 0
    wiped_after = wipe(keep=base_work()) if fast is None else True
    mark("done")
    header = reply_header(
        req["id"],
        status,
        timed_out=timed_out,
        over_cap=over,
        total=total,
        oom=[oom_before, oom_after] if OOM else None,
        files=files,
        clean=bool(wiped_before and wiped_after and swept),
        seconds=time.monotonic() - started,
        marks=marks,
    )
    return header, blobs


def reply_header(req_id, status, *, timed_out, over_cap, total, oom, files, clean, seconds, marks):
    """The header of a reply frame for a child that ended with wait status `status`."""
    return {
        "kind": "reply",
        "id": req_id,
        "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": timed_out,
        "over_cap": over_cap,
        "total": total,
        "oom": oom,
        "files": files,
        "clean": clean,
        "seconds": seconds,
        "marks": marks,
    }


def invalid(req):
    """Why a request cannot be served, or None."""
    if not isinstance(req, dict):
        return "not an object"
    strs = lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v)  # noqa: E731
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0  # noqa: E731
    checks = [
        ("id", isinstance(req.get("id"), str)),
        ("work", isinstance(req.get("work"), str) and req.get("work", "").startswith("/")),
        ("src", req.get("src") is None or isinstance(req.get("src"), str)),
        ("args", strs(req.get("args"))),
        # A relative dir of the work dir, never outside it; a collected session runs at the root.
        ("cwd", req.get("cwd") is None or (
            isinstance(req.get("cwd"), str)
            and not req["cwd"].startswith("/")
            and all(p not in ("", ".", "..") for p in req["cwd"].split("/"))
            and req.get("fast") is None)),
        ("collect", strs(req.get("collect", []))),
        ("timeout", num(req.get("timeout"))),
        ("cap", num(req.get("cap"))),
        ("fcap", num(req.get("fcap", 1))),
        ("kill_at", num(req.get("kill_at", 1))),
        ("fast", req.get("fast") is None or (
            isinstance(req.get("fast"), dict)
            and all(isinstance(req["fast"].get(k), str) and req["fast"][k].startswith("/") for k in ("base", "work"))
            and strs(req["fast"].get("changed")))),
    ]
    bad = [k for k, ok in checks if not ok]
    return ", ".join(bad) if bad else None


# ---- the collected-session fast path ----------------------------------------------------
#
# For requests that say how a candidate differs from a base tree ("fast": base, work,
# changed), the server keeps a collector: a child that copies the base into `work`, runs
# pytest with the request's arguments up to the end of collection (imports, fixtures, test
# items) and stops there. Per candidate the collector forks; the fork swaps in the
# candidate's new function bodies (`__code__` of the live function objects) and lets pytest
# go on to run the collected tests, exactly as the fresh run would from that point on. That
# skips the interpreter, pytest's start-up and collection: most of a candidate's cost.
#
# It is only done when it cannot change the verdict (else the request runs the normal way):
# every changed file is a project module imported by the normal loader (never a test or
# conftest file, which pytest rewrites); compiled, it differs from the base only inside
# function bodies (module and class bodies, defaults, decorators, annotations identical); no
# changed function ran before the fork (a profile hook records what ran during collection,
# live generators count as run); no other thread runs; collection left nothing in the other
# work areas. After each candidate the base work dir is checked against what it was when the
# collector became ready: new entries are deleted, any changed one ends the collector.

FAST = None  # the collector: dict(pid, key, req_w, rep_r, work, manifest)
FAST_FAILED = {}  # key -> why its collector could not be used
CO_NEWLOCALS = 0x2


class Collector(BaseException):
    """Raised in the forked collector to leave the server loop."""

    def __init__(self, key, base, work, args, req_r, rep_w):
        super().__init__()
        self.key, self.base, self.work, self.args = key, base, work, args
        self.req_r, self.rep_w = req_r, rep_w


class FastChild(BaseException):
    """Raised in a collector's fork to go back into pytest with the candidate's code."""

    def __init__(self, req, out_w, err_w, swaps):
        super().__init__()
        self.req, self.out_w, self.err_w, self.swaps = req, out_w, err_w, swaps


def read_some(fd, deadline, n):
    """Up to n bytes from fd once it is readable before deadline; b"" on timeout or EOF."""
    left = deadline - time.monotonic()
    if left <= 0:
        return b""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    ready = sel.select(left)
    sel.close()
    return os.read(fd, n) if ready else b""


def read_frame(fd, deadline):
    """One frame from fd (the collector's replies) before deadline, or None."""
    buf = b""
    while b"\n" not in buf:
        b = read_some(fd, deadline, 1 << 16)
        if not b or len(buf) > (1 << 20):
            return None
        buf += b
    line, _, rest = buf.partition(b"\n")
    try:
        header = json.loads(line)
        sizes = [int(n) for n in header.get("blobs", [])]
    except (ValueError, TypeError, AttributeError):
        return None
    need = sum(sizes)
    data = bytearray(rest)
    while len(data) < need:
        b = read_some(fd, deadline, min(1 << 20, need - len(data)))
        if not b:
            return None
        data += b
    blobs, at = [], 0
    for n in sizes:
        blobs.append(bytes(data[at:at + n]))
        at += n
    return header, blobs


def tree_state(root):
    """Every entry under root: relative path -> what lstat says (dirs: type, mode, inode)."""
    out = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            names = os.listdir(os.path.join(root, rel) if rel else root)
        except OSError:
            return None
        for n in names:
            r = os.path.join(rel, n) if rel else n
            try:
                st = os.lstat(os.path.join(root, r))
            except OSError:
                return None
            if stat.S_ISDIR(st.st_mode):
                out[r] = ("d", st.st_mode, st.st_ino, st.st_uid)
                stack.append(r)
            else:
                out[r] = ("f", st.st_mode, st.st_ino, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return out


def collector_pids():
    return (FAST["pid"],) if FAST is not None else ()


def base_work():
    return FAST["work"] if FAST is not None else None


def stop_fast(why=None):
    global FAST
    f = FAST
    FAST = None
    if f is None:
        return
    if why:
        FAST_FAILED[f["key"]] = why
    for fd in (f["req_w"], f["rep_r"]):
        try:
            os.close(fd)
        except OSError:
            pass
    for pid in (f["pid"], f.get("child")):
        for kill in (os.killpg, os.kill):
            try:
                if isinstance(pid, int) and pid > 1:
                    kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        os.waitpid(f["pid"], 0)
    except ChildProcessError:
        pass
    if SWEEP:
        sweep()
    wipe()


def start_fast(key, base, work, args, within):
    """Forks a collector for (base, work, args); True once it is ready (within `within`
    seconds: the host allows a request its timeout plus a grace of 15 s)."""
    global FAST
    stop_fast()
    wipe()
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(req_w)
        os.close(rep_r)
        raise Collector(key, base, work, args, req_r, rep_w)
    os.close(req_r)
    os.close(rep_w)
    FAST = {"pid": pid, "key": key, "req_w": req_w, "rep_r": rep_r, "work": work}
    got = read_frame(rep_r, time.monotonic() + within)
    if got is None or got[0].get("kind") != "ready":
        why = (got[0].get("why") if got else None) or "the collector did not get ready"
        stop_fast(why)
        return False
    FAST["manifest"] = tree_state(work)
    if FAST["manifest"] is None:
        stop_fast("the collected work dir cannot be listed")
        return False
    return True


def restore_base():
    """After a candidate: deletes what is new in the base work dir, and stops the collector
    when anything that was there has changed (the next candidate then starts a new one)."""
    work, manifest = FAST["work"], FAST["manifest"]
    now = tree_state(work)
    if now is None:
        stop_fast()
        return
    for rel, st in now.items():
        if rel not in manifest:
            p = os.path.join(work, rel)
            if os.path.lexists(p):
                if st[0] == "d":
                    shutil.rmtree(p, onerror=_make_removable)
                else:
                    try:
                        os.unlink(p)
                    except OSError:
                        pass
        elif manifest[rel] != st:
            stop_fast()
            return
    if any(rel not in now for rel in manifest):
        stop_fast()
        return
    if tree_state(work) != manifest:
        stop_fast()


def serve_fast(req):
    """The reply for `req` from the collector, or (None, why) when it must run the normal way."""
    fast = req["fast"]
    work = fast["work"]
    if os.path.dirname(work) not in WIPE:
        return None, "the base work dir is not directly in a work area"
    key = json.dumps([fast["base"], work, req["args"]])
    if key in FAST_FAILED:
        return None, FAST_FAILED[key]
    setup = time.monotonic()
    if (FAST is None or FAST["key"] != key) and not start_fast(
        key, fast["base"], work, req["args"], min(float(req["timeout"]) + 1, 10.0)
    ):
        return None, FAST_FAILED.get(key, "the collector stopped")
    started = time.monotonic()
    setup = started - setup
    wiped_before = wipe(keep=work)
    fwd = dict(req)
    fwd["work"] = work
    line = json.dumps(fwd, separators=(",", ":")).encode() + b"\n"
    try:
        view = memoryview(line)
        while view:
            n = os.write(FAST["req_w"], view)
            view = view[n:]
    except OSError:
        stop_fast()
        return None, "the collector is gone"
    deadline = time.monotonic() + float(req["timeout"]) + 5
    while True:
        got = read_frame(FAST["rep_r"], deadline)
        if got is None:
            stop_fast()
            return None, "the collector stopped answering"
        header, blobs = got
        kind = header.get("kind")
        if kind == "started":
            FAST["child"] = header.get("pid")
            send(header)
            continue
        if kind == "ineligible":
            return None, header.get("why", "ineligible")
        if kind != "reply":
            stop_fast()
            return None, "the collector sent an unexpected frame"
        break
    FAST["child"] = None  # reaped by the collector: its pid may be reused
    swept = sweep(spare=collector_pids()) if SWEEP else True
    reap_children()
    if FAST["pid"] in REAPED:
        stop_fast()  # the candidate, or the sweep, ended it
    REAPED.clear()
    if FAST is not None:
        restore_base()
    wiped_after = wipe(keep=FAST["work"] if FAST is not None else None)
    header["clean"] = bool(header.get("clean") and wiped_before and swept and wiped_after)
    header["seconds"] = time.monotonic() - started
    header["fast"] = "served" if FAST is not None else "served; collector stopped"
    header["setup"] = setup
    return (header, blobs), None


def collector_main(c):
    """In the collector: pytest up to the end of collection, then one fork per candidate."""
    global PROTO_IN, PROTO_OUT
    os.setsid()
    os.close(PROTO_IN)
    os.close(PROTO_OUT)
    PROTO_IN, PROTO_OUT = c.req_r, c.rep_w
    # What pytest writes before the fork goes to unlinked files; each candidate's fork
    # writes it again to its own pipes first and points every descriptor of these files
    # (pytest keeps duplicates) at its pipes.
    import tempfile

    outs = []
    for target in (1, 2):
        fd, path = tempfile.mkstemp(prefix="coval-collect-")
        os.unlink(path)
        os.dup2(fd, target)
        os.close(fd)
        outs.append(os.fstat(target).st_ino)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)

    def unready(why):
        send({"kind": "unready", "why": why})
        os._exit(0)

    try:
        shutil.copytree(c.base, c.work, symlinks=True)
        os.chdir(c.work)
    except OSError as e:
        unready(f"cannot copy the base ({e})")
    sys.path.insert(0, os.getcwd())
    sys.argv = [PYTEST_MAIN] + list(c.args)
    import importlib.machinery as importlib_machinery
    import linecache
    import marshal
    import threading
    import types

    prefix = os.path.realpath(c.work) + os.sep
    executed = set()

    def key_of(code):
        return (code.co_filename, code.co_firstlineno, getattr(code, "co_qualname", code.co_name))

    def profile(frame, event, _arg):
        if event == "call":
            executed.add(key_of(frame.f_code))

    state = {}
    in_child = []

    class Plugin:
        @pytest.hookimpl(tryfirst=True)
        def pytest_runtestloop(self, session):
            sys.setprofile(None)
            threading.setprofile(None)
            try:
                collector_loop(session)
            except FastChild as child:
                fast_child(child)
                # No result: pytest's own run loop goes on to run the tests, in this fork.
                return
            os._exit(0)

    def collector_loop(session):
        if session.testsfailed or session.shouldfail or session.shouldstop:
            unready("collection failed")
        if threading.active_count() > 1:
            unready("collection left threads running")
        for d in WIPE:
            try:
                if [e for e in os.listdir(d) if os.path.join(d, e) != c.work]:
                    unready(f"collection left files in {d}")
            except OSError:
                pass
        for o in gc.get_objects():
            if isinstance(o, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
                code = getattr(o, "gi_code", None) or getattr(o, "cr_code", None) or getattr(o, "ag_code", None)
                if code is not None:
                    executed.add(key_of(code))
        mods = {}
        for m in list(sys.modules.values()):
            spec = getattr(m, "__spec__", None)
            origin = getattr(spec, "origin", None)
            loader = getattr(spec, "loader", None)
            if not isinstance(origin, str) or type(loader) is not importlib_machinery.SourceFileLoader:
                continue
            real = os.path.realpath(origin)
            if real.startswith(prefix):
                mods.setdefault(real, []).append((origin, loader))
        origins = {origin for found in mods.values() for origin, _ in found}
        funcs = {}
        for o in gc.get_objects():
            if isinstance(o, types.FunctionType) and o.__code__.co_filename in origins:
                funcs.setdefault(key_of(o.__code__), []).append(o)
        state.update(mods=mods, funcs=funcs, old={}, out_ino=outs)
        for t, ino in zip((1, 2), outs):
            if os.fstat(t).st_ino != ino:
                unready("pytest is capturing at the end of collection")
            os.lseek(t, 0, os.SEEK_SET)
            state.setdefault("prefix", []).append(read_all(t))
        gc.freeze()
        send({"kind": "ready", "modules": len(mods), "functions": len(funcs)})
        buf = b""
        while True:
            req, buf = read_request(buf)
            if req is None:
                os._exit(0)
            swaps = eligible(req)
            if isinstance(swaps, str):
                send({"kind": "ineligible", "id": req["id"], "why": swaps})
                continue
            header, blobs = run_one(req, fast=swaps)
            send(header, blobs)

    def read_all(fd):
        chunks = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                return b"".join(chunks)
            chunks.append(b)

    def same_level(a, b):
        """Code run at import (module and class bodies): equal but for function bodies and
        line numbers."""
        attrs = ("co_code", "co_names", "co_varnames", "co_freevars", "co_cellvars", "co_flags",
                 "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_name")
        for at in attrs + ("co_exceptiontable",):
            if getattr(a, at, None) != getattr(b, at, None):
                return None
        if len(a.co_consts) != len(b.co_consts):
            return None
        swaps = []
        for x, y in zip(a.co_consts, b.co_consts):
            xc, yc = isinstance(x, types.CodeType), isinstance(y, types.CodeType)
            if xc != yc:
                return None
            if not xc:
                try:
                    if marshal.dumps(x) != marshal.dumps(y):
                        return None
                except ValueError:
                    return None
                continue
            if x.co_flags & CO_NEWLOCALS:
                if x != y:
                    same_name = key_of(x)[2] == key_of(y)[2]
                    if not same_name or x.co_freevars != y.co_freevars:
                        return None
                    swaps.append((x, y))
            else:
                inner = same_level(x, y)
                if inner is None:
                    return None
                swaps.extend(inner)
        return swaps

    def nested(code):
        yield code
        for k in code.co_consts:
            if isinstance(k, types.CodeType):
                yield from nested(k)

    def eligible(req):
        fast = req.get("fast") or {}
        changed = fast.get("changed")
        src = req.get("src")
        if not changed or not isinstance(src, str):
            return "no changed files named"
        out = []
        for rel in changed:
            path = os.path.realpath(os.path.join(c.work, rel))
            found = state["mods"].get(path)
            if not found:
                return f"{rel} is not a module imported during collection"
            if len(found) > 1:
                return f"{rel} is imported as two modules"
            origin, loader = found[0]
            new_src = read_collected(src, rel, 4 << 20)
            if new_src is None:
                return f"{rel} cannot be read"
            try:
                if path not in state["old"]:
                    with open(path, "rb") as fh:
                        state["old"][path] = loader.source_to_code(fh.read(), origin)
                old = state["old"][path]
                new = loader.source_to_code(new_src, origin)
            except Exception as e:  # noqa: BLE001 - a syntax error runs the normal way
                return f"{rel} does not compile here ({type(e).__name__})"
            swaps = same_level(old, new)
            if swaps is None:
                return f"{rel} changes more than function bodies"
            keys = [key_of(k) for k in nested(old)]
            for x, y in swaps:
                for k in nested(x):
                    if key_of(k) in executed:
                        return f"{rel}: {x.co_name} ran before the tests"
                if keys.count(key_of(x)) != 1:
                    return f"{rel}: {x.co_name} is not the only code at its line"
                live = state["funcs"].get(key_of(x), [])
                if not live:
                    return f"{rel}: no live function runs {x.co_name}"
                for f in live:
                    if len(f.__closure__ or ()) != len(y.co_freevars):
                        return f"{rel}: {x.co_name} has another closure"
                out.append((key_of(x), y))
            lines = new_src.decode("utf-8", "replace").splitlines(True)
            out.append(("lines", origin, len(new_src), lines))
        return out

    def fast_child(child):
        in_child.append(True)
        os.setsid()
        set_dumpable(True)
        try:
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("1000")
        except OSError:
            pass
        out_ino, err_ino = state["out_ino"]
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in (child.out_w, child.err_w):
                continue
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_ino == out_ino:
                os.dup2(child.out_w, fd)
            elif stat.S_ISREG(st.st_mode) and st.st_ino == err_ino:
                os.dup2(child.err_w, fd)
            elif stat.S_ISREG(st.st_mode) and st.st_nlink == 0:
                # pytest's capture files: empty, as at the fork point of a clean run.
                try:
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                except OSError:
                    pass
        for fd in (child.out_w, child.err_w, PROTO_IN, PROTO_OUT):
            try:
                os.close(fd)
            except OSError:
                pass
        for fd, data in zip((1, 2), state["prefix"]):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        for swap in child.swaps:
            if swap[0] == "lines":
                _, origin, size, lines = swap
                linecache.cache[origin] = (size, None, lines, origin)
                continue
            k, code = swap
            for f in state["funcs"].get(k, []):
                f.__code__ = code
        state.clear()

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        code = pytest.main(list(c.args), plugins=[Plugin()])
    except SystemExit as e:
        code = e.code
    except BaseException:  # noqa: BLE001
        if not in_child:
            unready("pytest failed before the tests")
        sys.excepthook(*sys.exc_info())
        code = 1
    if not in_child:
        # Still the collector: pytest ended without reaching the tests.
        unready("pytest ended before running tests")
    sys.setprofile(None)
    return normal_code(code)


def normal_code(code):
    """An exit code as `python -m pytest` turns pytest's result into one."""
    if code is None:
        return 0
    if isinstance(code, int):
        return int(code)
    try:
        print(code, file=sys.stderr)
    except Exception:  # noqa: BLE001
        pass
    return 1


def serve():
    send(
        {
            "kind": "hello",
            "ready": True,
            "python": sys.version.split()[0],
            "pytest": getattr(pytest, "__version__", "?"),
            "pid": MY_PID,
        }
    )
    buf = b""
    while True:
        try:
            req, buf = read_request(buf)
        except ValueError as e:
            send({"kind": "error", "error": f"bad request: {e}"})
            return 2
        if req is None:
            return 0
        why = invalid(req)
        if why:
            send({"kind": "error", "id": req.get("id") if isinstance(req, dict) else None, "error": f"bad request: {why}"})
            continue
        tried = time.monotonic()
        served, why = serve_fast(req) if req.get("fast") is not None else (None, None)
        if served is not None:
            header, blobs = served
        else:
            tried = time.monotonic() - tried
            header, blobs = run_one(req)
            if why is not None:
                header["fast"] = why
                header["setup"] = tried
        send(header, blobs)


def child_main(c):
    """In the forked child: become a fresh `python -m pytest` run in the candidate's dir."""
    req = c.req
    os.setsid()
    set_dumpable(True)
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")  # under memory pressure, the candidate goes before the server
    except OSError:
        pass
    os.dup2(c.out_w, 1)
    os.dup2(c.err_w, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    # Only 0, 1 and 2 stay open, as in a fresh process: never the protocol or the pipes' ends.
    os.closerange(3, 1 << 16)
    work = req["work"]
    src = req.get("src")
    try:
        if src:
            shutil.copytree(src, work, symlinks=True)
        os.chdir(os.path.join(work, req.get("cwd") or ""))
    except OSError as e:
        os.write(2, f"coval-sandbox: cannot copy the project into the work area ({e})\n".encode())
        os._exit(125)
    sys.path.insert(0, os.getcwd())
    sys.argv = [PYTEST_MAIN] + list(req["args"])
    # `raise SystemExit(pytest.console_main())`, as pytest/__main__.py does.
    try:
        code = pytest.console_main()
    except SystemExit as e:
        code = e.code
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught one
        sys.excepthook(*sys.exc_info())
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        try:
            print(code, file=sys.stderr)
        except Exception:  # noqa: BLE001
            pass
        code = 1
    return code


def child_exit(code):
    """The interpreter's shutdown as far as anyone can observe it: non-daemon threads joined,
    atexit handlers run, stdout and stderr flushed (a failed stdout flush exits 120), then exit.
    Tearing down every module and object (tens of milliseconds with pytest loaded) is skipped:
    the process is gone a moment later anyway, and its work area with it."""
    import atexit
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    else:
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join()
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is not None:
        run_exitfuncs()
    for stream, failed in ((sys.stdout, 120), (sys.stderr, None)):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            if failed is not None and code == 0:
                code = failed
    os._exit(code & 0xFF)


if MAIN:
    # Everything loaded so far is shared by every child: keep the collector off it (a pre-fork
    # server's use of gc.freeze; it saves each child scanning and copying the server's objects).
    import gc

    gc.freeze()
    _child = None
    _collector = None
    try:
        _code = serve()
    except Child as _c:
        _child = _c
    except Collector as _c:
        _collector = _c
    if _collector is not None:
        _collector.__traceback__ = None
        child_exit(collector_main(_collector))
    if _child is None:
        raise SystemExit(_code)
    # The child runs outside any exception handler (so no test exception is chained to `Child`),
    # with the server's frames gone.
    _child.__traceback__ = None
    child_exit(child_main(_child))
