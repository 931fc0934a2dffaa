#!/usr/bin/env bash
# Builds coval's sandbox base images locally from Debian packages (no image registry needed):
# debootstrap --variant=minbase into a cached root under .dev/, then `docker import`.
#
#   scripts/build-base-images.sh [--force] [python|node|go|python-web|node-web|all]...
#   (default: python)
#
#   python      coval/python:bookworm      python3 (also as `python`), python3-pytest,
#                                          python3-coverage, pip and venv (python3-pip,
#                                          python3-venv, python-is-python3)
#   node        coval/node:bookworm        nodejs, npm (by apt in the root)
#   go          coval/go:bookworm          golang-go
#   python-web  coval/python-web:bookworm  python plus python3-fastapi, -uvicorn, -flask, -httpx
#   node-web    coval/node-web:bookworm    nodejs plus node-express, npm (by apt in the root)
#
# pip, venv and npm are what a project environment (`coval env build`, crates/sandbox env)
# installs a project's own dependencies with, on top of these images.
#
# The -web variants are what `coval generate` tests and `coval run` deploys on (FastAPI, Flask,
# Express apps): separate images, so the sandbox images stay small and are not rebuilt.
#
# Idempotent: an image that exists (built by this recipe version) is skipped unless --force; a
# finished debootstrap root is reused (delete .dev/images/<lang>-<suite> or pass --force to
# rebuild it). The images named in one run are built side by side (COVAL_IMAGE_JOBS at a time,
# default 2). Two runs at once are serialised by a lock, so a second caller waits and then
# finds the image built.
#
# Environment:
#   COVAL_DEV_DIR          state dir (default: <repo root>/.dev)
#   COVAL_DEBIAN_MIRROR    mirror URI (default: the first `URIs:` of debian.sources, else
#                          http://deb.debian.org/debian)
#   COVAL_DEBIAN_SUITE     suite (default: bookworm)
# Progress and timings go to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${COVAL_DEV_DIR:-$ROOT/.dev}"
mkdir -p "$STATE/images"
STATE="$(cd "$STATE" && pwd)"
SUITE="${COVAL_DEBIAN_SUITE:-bookworm}"
# Bump when the recipe changes: images with another version are rebuilt (from the cached root).
readonly RECIPE=3

log() { printf '[build-base-images] %s\n' "$*" >&2; }
die() {
    printf '[build-base-images] error: %s\n' "$*" >&2
    exit 1
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

usage() {
    printf 'usage: %s [--force] [python|node|go|python-web|node-web|all]...\n' "$0" >&2
    exit 2
}

# The Debian mirror: only the main archive's URI (security or third-party entries may be
# unreachable or lack the packages).
mirror() {
    if [[ -n "${COVAL_DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "$COVAL_DEBIAN_MIRROR"
        return
    fi
    local f=/etc/apt/sources.list.d/debian.sources uri=""
    if [[ -r "$f" ]]; then
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")"
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

packages_for() {
    case "$1" in
    python) echo python3,python3-pytest,python3-coverage,python3-pip,python3-venv,python-is-python3 ;;
    node) echo nodejs ;;
    go) echo golang-go ;;
    python-web) echo python3,python3-pytest,python3-coverage,python3-pip,python3-venv,python-is-python3,python3-fastapi,python3-uvicorn,python3-flask,python3-httpx ;;
    node-web) echo nodejs ;;
    *) return 1 ;;
    esac
}

# Packages installed afterwards by apt inside the root: debootstrap cannot resolve virtual
# packages (node-express needs node-side-channel, provided by node-deep-equal, which needs more;
# npm needs hundreds of node-* packages, some of them virtual).
apt_extra_for() {
    case "$1" in
    node) echo npm ;;
    node-web) echo node-express npm ;;
    *) echo "" ;;
    esac
}

image_for() { printf 'coval/%s:%s\n' "$1" "$SUITE"; }

ensure_tools() {
    command -v docker >/dev/null 2>&1 || die "docker not found: run scripts/dev-services.sh up first"
    docker info >/dev/null 2>&1 || die "the Docker engine does not answer: run scripts/dev-services.sh up first"
    if ! command -v debootstrap >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "debootstrap not found and no apt-get to install it"
        log "installing debootstrap"
        local sudo=""
        [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1 && sudo=sudo
        if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap >&2; then
            DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap >&2
        fi
    fi
    [[ "$(id -u)" == 0 ]] || die "debootstrap needs root (run as root or with sudo)"
}

build_one() {
    local lang="$1" force="$2" image pkgs dir t0 t1
    image="$(image_for "$lang")"
    pkgs="$(packages_for "$lang")" || die "unknown language '$lang'"
    if [[ "$force" != 1 ]]; then
        local have
        have="$(docker image inspect --format '{{index .Config.Labels "dev.coval.recipe"}}' "$image" 2>/dev/null || true)"
        if [[ "$have" == "$RECIPE" ]]; then
            log "$image exists; skipping (use --force to rebuild)"
            return 0
        fi
        [[ -n "$have" ]] && log "$image was built by another recipe (${have:-none}); rebuilding"
    fi
    dir="$STATE/images/$lang-$SUITE"
    t0=$EPOCHREALTIME
    if [[ "$force" == 1 || ! -f "$dir/.coval-complete" ]]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        local m
        m="$(mirror)"
        log "debootstrap --variant=minbase --include=$pkgs $SUITE $dir $m"
        if ! debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$dir" "$m" >"$STATE/images/$lang.log" 2>&1; then
            tail -n 20 "$STATE/images/$lang.log" >&2 || true
            die "debootstrap for $lang failed (full log: $STATE/images/$lang.log)"
        fi
        local extra
        extra="$(apt_extra_for "$lang")"
        if [[ -n "$extra" ]]; then
            log "apt-get install $extra (in the root)"
            cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
            # shellcheck disable=SC2086
            if ! { chroot "$dir" apt-get update -qq &&
                chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $extra; } >>"$STATE/images/$lang.log" 2>&1; then
                tail -n 20 "$STATE/images/$lang.log" >&2 || true
                die "apt-get install $extra for $lang failed (full log: $STATE/images/$lang.log)"
            fi
        fi
        # Package caches are dead weight in an image that never runs apt.
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log
        touch "$dir/.coval-complete"
        log "debootstrap $lang: $(since "$t0"), $(du -sh --exclude=proc --exclude=sys "$dir" 2>/dev/null | cut -f1)"
    else
        log "reusing the debootstrap root $dir"
    fi
    # The warm `node --test` server runs from a copy of node its user may execute but not
    # read: the kernel then makes that process non-dumpable, out of the candidates' reach.
    if [[ -e "$dir/usr/bin/node" ]]; then
        install -D -m 0711 -o root -g root "$(readlink -f "$dir/usr/bin/node")" "$dir/usr/local/libexec/coval/node"
    fi
    t1=$EPOCHREALTIME
    local old_id
    old_id="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
    # No WORKDIR: a tmpfs mounted over a directory of the image copies that directory's mode
    # (0755, root), and the sandbox's non-root user could not write its work area.
    tar -C "$dir" --exclude=./.coval-complete --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* \
        -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL dev.coval.base=$lang" \
        --change "LABEL dev.coval.recipe=$RECIPE" \
        - "$image" >/dev/null
    log "docker import $image: $(since "$t1"); total $(since "$t0")"
    # A rebuilt tag leaves the old image dangling: drop it unless a container still uses it.
    if [[ -n "$old_id" && "$old_id" != "$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null)" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
}

main() {
    local force=0 langs=() l
    for a in "$@"; do
        case "$a" in
        --force) force=1 ;;
        python | node | go | python-web | node-web) langs+=("$a") ;;
        all) langs+=(python node go python-web node-web) ;;
        -h | --help) usage ;;
        *) usage ;;
        esac
    done
    ((${#langs[@]})) || langs=(python)
    ensure_tools
    exec 9>"$STATE/images/.lock"
    flock -w 1800 9 || die "another build-base-images.sh holds $STATE/images/.lock"
    local t0=$EPOCHREALTIME jobs="${COVAL_IMAGE_JOBS:-2}" pids=() failed=0 p
    # Builds run side by side, $jobs at a time: debootstrap waits on downloads and dpkg as much
    # as on the CPU, so two at once on two cores take little longer than one.
    for l in "${langs[@]}"; do
        while (($(jobs -rp | wc -l) >= jobs)); do
            wait -n || failed=1
        done
        build_one "$l" "$force" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || failed=1
    done
    ((failed == 0)) || die "some images failed to build (see above)"
    log "done in $(since "$t0")"
}

main "$@"
