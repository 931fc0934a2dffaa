# coval's Python environment installer: run by the environment build (crates/sandbox env) in a
# copy of the project, with network access, never on candidates. Reads what the project
# declares (requirements*.txt, pyproject.toml: PEP 621 dependencies and the test/tests/testing/
# dev optional groups, Poetry and PDM groups, PEP 735 dependency groups; setup.py/setup.cfg
# through pip's own resolution) and installs it into a virtualenv, never the project itself:
# candidates are copies of the project, and an installed copy would shadow them.
#
#   python3 install.py venv DIR [--lean] make the virtualenv DIR (exit 90: cannot); --lean: without
#                                        pip of its own when this python's pip can target it
#   DIR/bin/python install.py deps [M..] install the declared dependencies (and M.. with them)
#   DIR/bin/python install.py runner M.. install modules M (pytest, coverage) when missing
#   PY install.py check M..              exit 0 when M.. and every declared dependency import
#
# Lines starting with `coval-env:` say what is being done (the build shows them as progress).
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

GROUPS = ("test", "tests", "testing", "dev")
PIP_FLAGS = [
    "--disable-pip-version-check",
    "--no-input",
    "--retries",
    "2",
    "--timeout",
    "30",
]
# A requirement line that installs the project itself (`.`, `-e .`, `-e .[test]`, `file:.`).
SELF = re.compile(r"^\s*(-e\s+|--editable\s+)?(\.|\./|file:\.)(\[([^\]]*)\])?\s*(#.*)?$")
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def say(msg):
    print("coval-env: " + msg, flush=True)


def pip():
    """pip for this interpreter: its own when it has one, else the base interpreter's pointed
    at it (`--python`): a lean virtualenv has no pip of its own."""
    base = getattr(sys, "_base_executable", None)
    if sys.prefix != sys.base_prefix and base and not importable("pip"):
        return [base, "-m", "pip", "--python", sys.executable] + PIP_FLAGS
    return [sys.executable, "-m", "pip"] + PIP_FLAGS


def run(args):
    shown = args[args.index("pip") + 1 :] if "pip" in args else args
    say(" ".join(a if " " not in a else repr(a) for a in shown if a and a not in PIP_FLAGS))
    rc = subprocess.call(args)
    if rc != 0:
        sys.exit(rc)


def load_toml(path):
    try:
        import tomllib as toml
    except ImportError:
        try:
            import tomli as toml
        except ImportError:
            say("no TOML reader in this Python (3.11+ has tomllib): pyproject.toml groups skipped")
            return {}
    with open(path, "rb") as f:
        try:
            return toml.load(f)
        except Exception as e:  # noqa: BLE001 - any parse error is a broken manifest
            print(f"ERROR: pyproject.toml is not valid TOML: {e}", file=sys.stderr)
            sys.exit(2)


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def poetry_constraint(v):
    """A Poetry version constraint as a PEP 440 specifier."""
    v = v.strip()
    if v in ("", "*"):
        return ""

    def parts(s):
        return [int(p) if p.isdigit() else 0 for p in s.split(".")]

    if v.startswith("^"):
        base = v[1:].strip()
        p = parts(base)
        i = next((k for k, x in enumerate(p) if x != 0), len(p) - 1)
        upper = p[: i + 1]
        upper[i] += 1
        upper += [0] * (len(p) - len(upper))
        return f">={base},<{'.'.join(map(str, upper))}"
    if v.startswith("~") and not v.startswith("~="):
        base = v[1:].strip()
        p = parts(base)
        if len(p) == 1:
            return f">={base},<{p[0] + 1}"
        return f">={base},<{p[0]}.{p[1] + 1}"
    if v[0].isdigit():
        return "==" + v
    return v


def poetry_deps(table):
    out = []
    for name, spec in (table or {}).items():
        if name.lower() == "python":
            continue
        extras = ""
        if isinstance(spec, dict):
            if spec.get("optional"):
                continue
            if spec.get("path") or spec.get("git") or spec.get("url"):
                # A local path or VCS dependency: pip takes it as a URL.
                ref = spec.get("git") or spec.get("url") or spec.get("path")
                out.append(f"{name} @ {'git+' + ref if spec.get('git') and not ref.startswith('git+') else ref}")
                continue
            if spec.get("extras"):
                extras = "[" + ",".join(spec["extras"]) + "]"
            spec = spec.get("version", "*")
        if isinstance(spec, list):
            spec = "*"
        out.append(f"{name}{extras}{poetry_constraint(str(spec))}")
    return out


def group_lines(groups, name, seen):
    """PEP 735 `[dependency-groups]`: strings and `{include-group = ...}`."""
    if name in seen or name not in groups:
        return []
    seen.add(name)
    out = []
    for item in groups[name]:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and "include-group" in item:
            out += group_lines(groups, item["include-group"], seen)
    return out


def declared():
    """(requirement lines, requirement files, pip targets for the project's own metadata)."""
    lines, files, targets = [], [], []
    project_name = None
    self_extras = set()
    for f in sorted(glob.glob("requirements*.txt")) + sorted(glob.glob("requirements/*.txt")):
        kept = []
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = SELF.match(line)
                if m:
                    self_extras.update(e.strip() for e in (m.group(4) or "").split(",") if e.strip())
                    continue
                kept.append(line)
        with open(f, "w", encoding="utf-8") as fh:
            fh.writelines(kept)
        files.append(f)
    py = load_toml("pyproject.toml") if os.path.exists("pyproject.toml") else {}
    project = py.get("project") or {}
    project_name = project.get("name")
    dynamic = set(project.get("dynamic") or [])
    wanted = set(GROUPS) | self_extras
    if project and not ({"dependencies", "optional-dependencies"} & dynamic):
        lines += list(project.get("dependencies") or [])
        optional = project.get("optional-dependencies") or {}
        todo, done = [g for g in optional if g in wanted], set()
        while todo:
            g = todo.pop()
            if g in done:
                continue
            done.add(g)
            for req in optional[g]:
                m = re.match(r"^\s*([A-Za-z0-9._-]+)\s*\[([^\]]*)\]", req)
                if project_name and m and norm(m.group(1)) == norm(project_name):
                    todo += [e.strip() for e in m.group(2).split(",") if e.strip() in optional]
                    continue
                lines.append(req)
    elif project or os.path.exists("setup.py") or os.path.exists("setup.cfg"):
        targets.append(".[" + ",".join(sorted(wanted)) + "]")
    poetry = (py.get("tool") or {}).get("poetry") or {}
    if poetry and not project:
        lines += poetry_deps(poetry.get("dependencies"))
        extras = poetry.get("extras") or {}
        optional = {
            n: s for n, s in (poetry.get("dependencies") or {}).items() if isinstance(s, dict) and s.get("optional")
        }
        for g, names in extras.items():
            if g in wanted:
                lines += poetry_deps({n: dict(optional[n], optional=False) for n in names if n in optional})
    if poetry:
        lines += poetry_deps(poetry.get("dev-dependencies"))
        for g, t in (poetry.get("group") or {}).items():
            if g in GROUPS:
                lines += poetry_deps(t.get("dependencies"))
    pdm = (py.get("tool") or {}).get("pdm") or {}
    for g, reqs in (pdm.get("dev-dependencies") or {}).items():
        if g in GROUPS:
            lines += [r for r in reqs if not SELF.match(r) and not r.startswith("-e")]
    groups = py.get("dependency-groups") or {}
    seen = set()
    for g in GROUPS:
        lines += group_lines(groups, g, seen)
    if project_name:
        lines = [x for x in lines if not (NAME.match(x) and norm(NAME.match(x).group(1)) == norm(project_name))]
    return lines, files, targets


def metadata_deps(targets):
    """What pip resolves for the project's own metadata (setup.py, setup.cfg, dynamic
    pyproject), without the project: a dry run with a report."""
    with tempfile.TemporaryDirectory() as d:
        report = os.path.join(d, "report.json")
        run(pip() + ["install", "--dry-run", "--ignore-installed", "--report", report] + targets)
        with open(report, encoding="utf-8") as f:
            data = json.load(f)
    out = []
    for item in data.get("install", []):
        info = item.get("download_info") or {}
        url = info.get("url", "")
        meta = item.get("metadata") or {}
        if url.startswith("file:") and "dir_info" in info:
            continue  # the project itself
        if "archive_info" in info and "vcs_info" not in info and not url.startswith("file:"):
            out.append(f"{meta.get('name')}=={meta.get('version')}")
        elif "vcs_info" in info:
            vcs = info["vcs_info"]
            out.append(f"{meta.get('name')} @ {vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}")
        else:
            out.append(f"{meta.get('name')} @ {url}")
    return out


def deps(runner_modules=()):
    """Installs what the project declares, and with it (one pip resolution, not two) the
    runner modules it does not bring itself."""
    lines, files, targets = declared()
    if targets:
        lines += metadata_deps(targets)
    if not lines and not files:
        say("the project declares no dependencies")
        runner(runner_modules)
        return
    args = []
    for f in files:
        args += ["-r", f]
    if lines:
        fd, path = tempfile.mkstemp(prefix="coval-reqs-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        args += ["-r", path]
        say("declared: " + ", ".join(lines))
    extra = [m for m in runner_modules if not importable(m)]
    run(pip() + ["install"] + args + extra)


def importable(module):
    """`module` imports, and is a real module (an empty directory of its name is a namespace
    package: it imports, and has no `__file__`)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), "__file__", None) is not None
    except Exception:  # noqa: BLE001 - any failure to import is "not there"
        return False


def runner(modules):
    missing = [m for m in modules if not importable(m)]
    if missing:
        run(pip() + ["install"] + missing)
    else:
        say("runner present: " + ", ".join(modules))


def check(modules):
    from importlib import metadata

    missing = [m for m in modules if not importable(m)]
    lines, _files, targets = declared_readonly()
    if targets:
        # Dependencies only pip can read (setup.py): not checked here; the build would know.
        pass
    for line in lines:
        m = NAME.match(line)
        if not m or line.lstrip().startswith("-"):
            continue
        if ";" in line:
            continue  # an environment marker: may not apply here
        try:
            metadata.version(m.group(1))
        except metadata.PackageNotFoundError:
            missing.append(m.group(1))
    if missing:
        print("missing: " + ", ".join(missing))
        sys.exit(1)
    print("ok")


def declared_readonly():
    """`declared()` without rewriting requirement files."""
    lines = []
    for f in sorted(glob.glob("requirements*.txt")) + sorted(glob.glob("requirements/*.txt")):
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                s = line.split("#", 1)[0].strip()
                if s and not SELF.match(line) and not s.startswith("-"):
                    lines.append(s)
    py = load_toml("pyproject.toml") if os.path.exists("pyproject.toml") else {}
    project = py.get("project") or {}
    lines += list(project.get("dependencies") or [])
    poetry = (py.get("tool") or {}).get("poetry") or {}
    lines += poetry_deps(poetry.get("dependencies"))
    return lines, [], []


def apt_install_venv():
    """In an environment image's build (as root, network on, `COVAL_APT=1`): Debian's
    python3-venv and python3-pip, when the base image lacks them."""
    import shutil

    if os.environ.get("COVAL_APT") != "1" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    say("the base image has no ensurepip: apt-get install python3-venv python3-pip")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    ok = subprocess.call(["apt-get", "update", "-qq"], env=env) == 0 and (
        subprocess.call(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "python3-venv", "python3-pip"],
            env=env,
        )
        == 0
    )
    subprocess.call(["sh", "-c", "rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb"])
    return ok


def pip_targets_others():
    """This interpreter has a pip that can install into another one (`--python`, pip 22.3+)."""
    from importlib import metadata

    try:
        m = re.match(r"(\d+)\.(\d+)", metadata.version("pip"))
    except Exception:  # noqa: BLE001 - no pip, or unreadable metadata
        return False
    return m is not None and (int(m[1]), int(m[2])) >= (22, 3)


def make_venv(path, retry=True, lean=False):
    import venv

    if lean and pip_targets_others():
        # No pip of its own: ensurepip alone takes seconds, and pip's files would be in every
        # environment; this interpreter's pip installs into it (`--python`).
        try:
            venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(path)
            say("virtualenv without pip of its own: " + sys.executable + " -m pip --python installs into it")
            return
        except BaseException as e:  # noqa: BLE001
            say(f"venv without pip failed ({e!r}); trying with pip")
    # Debian's venv exits (SystemExit) when ensurepip is missing: catch everything.
    try:
        venv.EnvBuilder(with_pip=True, symlinks=True, clear=True).create(path)
        return
    except BaseException as e:  # noqa: BLE001
        say(f"venv with pip failed ({e!r}); trying without pip")
    if retry and apt_install_venv():
        subprocess.check_call([sys.executable, __file__, "venv", path], env=dict(os.environ, COVAL_APT="0"))
        return
    try:
        venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(path)
    except BaseException as e:  # noqa: BLE001
        print(f"COVAL-NO-VENV: {sys.executable} cannot make a virtualenv: {e!r}", file=sys.stderr)
        sys.exit(90)
    py = os.path.join(path, "bin", "python")
    if subprocess.call([sys.executable, "-m", "pip", "--version"], stdout=subprocess.DEVNULL) == 0:
        rc = subprocess.call([sys.executable, "-m", "pip", "--python", py, "install", "pip"])
        if rc == 0:
            return
    print(
        f"COVAL-NO-VENV: {sys.executable} has neither ensurepip nor pip (Debian: apt-get install python3-venv)",
        file=sys.stderr,
    )
    sys.exit(90)


def main(argv):
    if len(argv) < 2:
        print(__doc__ or "usage: install.py venv|deps|runner|check", file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "venv":
        make_venv(argv[2], lean="--lean" in argv[3:])
    elif cmd == "deps":
        deps(argv[2:])
    elif cmd == "runner":
        runner(argv[2:])
    elif cmd == "check":
        check(argv[2:])
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
