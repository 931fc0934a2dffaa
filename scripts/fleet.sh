#!/usr/bin/env bash
# The coval fleet in Docker Compose (docker-compose.yml): builds its two images from local
# artifacts (no registry is reachable here) and runs compose with them.
#
#   scripts/fleet.sh images           build the images unless built; prints their names:
#                                       COVAL_WORKER_IMAGE=coval-fleet/worker:<key>
#                                       COVAL_NATS_IMAGE=coval-fleet/nats:<key>
#   scripts/fleet.sh compose ARGS...  `images`, then docker-compose -f docker-compose.yml ARGS
#     e.g. scripts/fleet.sh compose -p coval up -d
#          scripts/fleet.sh compose -p coval up -d --scale validate=3
#          scripts/fleet.sh compose -p coval down -v
#
# The worker image (deploy/Dockerfile) holds the six stage binaries cargo already built
# (target/release when all six are there, else target/debug; COVAL_FLEET_BIN_DIR names
# another directory), stripped of debug info; the NATS image (deploy/nats/Dockerfile) holds
# $NATS_SERVER_BIN (from scripts/dev-services.sh, else found on PATH or in .dev/venv) and
# deploy/nats/nats.conf. Both build on coval/python:bookworm (scripts/build-base-images.sh
# python, run here when the image is missing) with --network none.
#
# Each image's tag is a content hash of what goes into it (the Dockerfile, the binaries, the
# config, the base image's id): a second run with the same binaries builds nothing. Images
# of this script older than COVAL_FLEET_KEEP_HOURS (default 1) are removed after a build
# unless a container uses them.
#
# Environment: COVAL_FLEET_BIN_DIR, NATS_SERVER_BIN, COVAL_FLEET_BASE (default
# coval/python:bookworm), COVAL_DEV_DIR (default .dev; build contexts go to $COVAL_DEV_DIR/fleet
# and are removed after the build), DOCKER_HOST. Progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="${COVAL_DEV_DIR:-$ROOT/.dev}"
BASE="${COVAL_FLEET_BASE:-coval/python:bookworm}"
STAGES=(triage decision mre fix validate integrate)
KEEP_HOURS="${COVAL_FLEET_KEEP_HOURS:-1}"

log() { printf '[fleet] %s\n' "$*" >&2; }
die() {
    printf '[fleet] error: %s\n' "$*" >&2
    exit 1
}

# The directory holding all six coval-<stage> binaries.
bin_dir() {
    local d s ok
    if [[ -n "${COVAL_FLEET_BIN_DIR:-}" ]]; then
        d="$COVAL_FLEET_BIN_DIR"
        for s in "${STAGES[@]}"; do
            [[ -x "$d/coval-$s" ]] || die "COVAL_FLEET_BIN_DIR=$d has no coval-$s: build it (cargo build -p stages)"
        done
        printf '%s\n' "$d"
        return
    fi
    local target="${CARGO_TARGET_DIR:-$ROOT/target}"
    for d in "$target/release" "$target/debug"; do
        ok=1
        for s in "${STAGES[@]}"; do
            [[ -x "$d/coval-$s" ]] || ok=0
        done
        if ((ok)); then
            printf '%s\n' "$d"
            return
        fi
    done
    die "no coval-<stage> binaries in $target/release or $target/debug: run cargo build --release -p stages"
}

nats_bin() {
    local c
    for c in "${NATS_SERVER_BIN:-}" "$(command -v nats-server 2>/dev/null || true)" "$DEV/venv/bin/nats-server"; do
        if [[ -n "$c" && -x "$c" ]]; then
            readlink -f "$c"
            return
        fi
    done
    die "no nats-server: run scripts/dev-services.sh up and export NATS_SERVER_BIN"
}

ensure_base() {
    if ! docker image inspect "$BASE" >/dev/null 2>&1; then
        [[ "$BASE" == coval/python:bookworm ]] || die "base image $BASE is missing"
        log "base image $BASE is missing: scripts/build-base-images.sh python"
        "$ROOT/scripts/build-base-images.sh" python >&2
    fi
    docker image inspect --format '{{.Id}}' "$BASE"
}

# key FILE...: the first 16 hex digits of the sha256 over the files' contents and $BASE_ID.
key() {
    { printf '%s\n' "$BASE_ID"; sha256sum "$@" | cut -d' ' -f1; } | sha256sum | cut -c1-16
}

# build NAME TAG DOCKERFILE CONTEXT: docker build with no network, labelled as ours.
build() {
    local name="$1" tag="$2" dockerfile="$3" context="$4" t0=$SECONDS
    log "building $tag"
    DOCKER_BUILDKIT=0 docker build --network none --rm --force-rm -q \
        --build-arg "BASE=$BASE" --build-arg "FLEET_KEY=${tag##*:}" \
        -f "$dockerfile" -t "$tag" "$context" >/dev/null 2>"$context.err" || {
        cat "$context.err" >&2
        die "building $name failed"
    }
    rm -f "$context.err"
    log "built $tag in $((SECONDS - t0)) s"
}

# Removes this script's images older than KEEP_HOURS (never the current ones; an image a
# container uses is refused by the engine and kept), and the gather stage's leftovers.
prune() {
    local ref created now cutoff
    now="$(date +%s)"
    cutoff=$((now - KEEP_HOURS * 3600))
    docker image ls --filter label=coval.fleet --format '{{.Repository}}:{{.Tag}}' | while read -r ref; do
        [[ "$ref" == "$WORKER_IMAGE" || "$ref" == "$NATS_IMAGE" || "$ref" == *"<none>"* ]] && continue
        created="$(docker image inspect --format '{{.Created}}' "$ref" 2>/dev/null)" || continue
        created="$(date -d "$created" +%s 2>/dev/null)" || continue
        if ((created < cutoff)); then
            docker image rm "$ref" >/dev/null 2>&1 && log "removed old image $ref"
        fi
    done
    # The gather stage's image is an untagged intermediate of every worker build: remove this
    # build's (another key's may be the intermediate of a build running now).
    docker image ls -q --filter dangling=true --filter "label=coval.fleet.gather=${WORKER_IMAGE##*:}" | sort -u |
        while read -r id; do docker image rm "$id" >/dev/null 2>&1 || true; done
}

cmd_images() {
    command -v docker >/dev/null 2>&1 || die "no docker client"
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "no Docker engine answers: scripts/dev-services.sh up"
    BASE_ID="$(ensure_base)"
    local bins nats ctx s built=0
    bins="$(bin_dir)"
    nats="$(nats_bin)"
    local files=("$ROOT/deploy/Dockerfile")
    for s in "${STAGES[@]}"; do files+=("$bins/coval-$s"); done
    WORKER_IMAGE="coval-fleet/worker:$(key "${files[@]}")"
    NATS_IMAGE="coval-fleet/nats:$(key "$ROOT/deploy/nats/Dockerfile" "$ROOT/deploy/nats/nats.conf" "$nats")"

    mkdir -p "$DEV/fleet"
    # Build contexts hold copies of the binaries: never leave them behind.
    trap 'rm -rf "$DEV/fleet/$$-"*' EXIT
    if docker image inspect "$WORKER_IMAGE" >/dev/null 2>&1; then
        log "$WORKER_IMAGE is built (from $bins)"
    else
        ctx="$DEV/fleet/$$-worker"
        mkdir -p "$ctx/bin"
        for s in "${STAGES[@]}"; do
            # Debug info is most of a debug binary's size; symbols stay for backtraces.
            strip --strip-debug -o "$ctx/bin/coval-$s" "$bins/coval-$s" 2>/dev/null \
                || cp "$bins/coval-$s" "$ctx/bin/coval-$s"
        done
        cp "$ROOT/deploy/Dockerfile" "$ctx/Dockerfile"
        build worker "$WORKER_IMAGE" "$ctx/Dockerfile" "$ctx"
        rm -rf "$ctx"
        built=1
    fi
    if docker image inspect "$NATS_IMAGE" >/dev/null 2>&1; then
        log "$NATS_IMAGE is built"
    else
        ctx="$DEV/fleet/$$-nats"
        mkdir -p "$ctx"
        cp "$nats" "$ctx/nats-server"
        cp "$ROOT/deploy/nats/nats.conf" "$ROOT/deploy/nats/Dockerfile" "$ctx/"
        build nats "$NATS_IMAGE" "$ctx/Dockerfile" "$ctx"
        rm -rf "$ctx"
        built=1
    fi
    ((built)) && prune
    printf 'COVAL_WORKER_IMAGE=%s\nCOVAL_NATS_IMAGE=%s\n' "$WORKER_IMAGE" "$NATS_IMAGE"
}

compose_cli() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose "$@"
    else
        die "neither docker compose nor docker-compose: apt-get install docker-compose"
    fi
}

cmd_compose() {
    local line
    while read -r line; do
        export "${line?}"
    done < <(cmd_images)
    [[ -n "${COVAL_WORKER_IMAGE:-}" && -n "${COVAL_NATS_IMAGE:-}" ]] || die "the images were not built"
    compose_cli -f "$ROOT/docker-compose.yml" "$@"
}

case "${1:-}" in
images) cmd_images ;;
compose)
    shift
    cmd_compose "$@"
    ;;
*)
    printf 'usage: %s images | compose ARGS...\n' "$0" >&2
    exit 2
    ;;
esac
