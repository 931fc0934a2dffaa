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

import os
import sys

# `python3 -c` puts '' (the current dir) first on sys.path; the parent imports nothing from
# there, and each child puts its own work dir first, as `python3 -m` would.
if sys.path and sys.path[0] in ("", "."):
    del sys.path[0]

PROTO_IN = os.dup(0)
PROTO_OUT = os.dup(1)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)
os.dup2(2, 1)
os.close(_null)


def send(header, blobs=()):
    import json as _json

    blobs = [bytes(b) for b in blobs]
    header = dict(header)
    header["blobs"] = [len(b) for b in blobs]
    data = _json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(blobs)
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
if not set_dumpable(False):
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
    """Live (not zombie) processes of this user other than the server."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return False
    for name in names:
        if not name.isdigit() or int(name) in (MY_PID, 1):
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
            return True
    return False


def sweep():
    """SIGKILL to every process this user may signal but the server; True when none is left."""
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


def wipe():
    """Empties the work areas; True when they are empty afterwards."""
    clean = True
    for d in WIPE:
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for e in entries:
            p = os.path.join(d, e)
            try:
                if stat.S_ISDIR(os.lstat(p).st_mode):
                    shutil.rmtree(p, onerror=_make_removable)
                else:
                    os.unlink(p)
            except OSError:
                pass
        try:
            if os.listdir(d):
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


def run_one(req):
    """Forks the child for `req` and watches it; returns the reply frame (parent only)."""
    started = time.monotonic()
    marks = []

    def mark(name):
        marks.append((name, round(time.monotonic() - started, 4)))

    timeout = float(req["timeout"])
    cap = int(req["cap"])
    # Killed only beyond this many bytes (the fresh path's own slack); kept: `cap`.
    kill_at = max(cap, int(req.get("kill_at", cap)))
    work = req["work"]
    wiped_before = wipe()
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
    swept = sweep() if SWEEP else True
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
    wiped_after = wipe()
    mark("done")
    header = {
        "kind": "reply",
        "id": req["id"],
        "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": timed_out,
        "over_cap": over,
        "total": total,
        "oom": [oom_before, oom_after] if OOM else None,
        "files": files,
        "clean": bool(wiped_before and wiped_after and swept),
        "seconds": time.monotonic() - started,
        "marks": marks,
    }
    return header, blobs


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
        ("collect", strs(req.get("collect", []))),
        ("timeout", num(req.get("timeout"))),
        ("cap", num(req.get("cap"))),
        ("fcap", num(req.get("fcap", 1))),
        ("kill_at", num(req.get("kill_at", 1))),
    ]
    bad = [k for k, ok in checks if not ok]
    return ", ".join(bad) if bad else None


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
        header, blobs = run_one(req)
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
        os.chdir(work)
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


# Everything loaded so far is shared by every child: keep the collector off it (a pre-fork
# server's use of gc.freeze; it saves each child scanning and copying the server's objects).
import gc

gc.freeze()
_child = None
try:
    _code = serve()
except Child as _c:
    _child = _c
if _child is None:
    raise SystemExit(_code)
# The child runs outside any exception handler (so no test exception is chained to `Child`),
# with the server's frames gone.
_child.__traceback__ = None
child_exit(child_main(_child))
