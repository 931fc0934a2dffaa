#!/usr/bin/env bash
# The project's one test command: local services, formatting, lints, then every test.
#   scripts/test.sh [extra cargo test args...]   e.g. scripts/test.sh -- --nocapture
# Set COVAL_SKIP_DOCKER=1 on machines without Docker (tests that need it fail or skip).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "scripts/dev-services.sh up"
services_env="$(scripts/dev-services.sh up)"
eval "$services_env"
printf '%s\n' "$services_env" >&2

step "test toolchains (Debian packages the tests run against)"
# The local sandbox runs the host's interpreters; the Docker images are built by the tests.
missing=()
command -v go >/dev/null 2>&1 || missing+=(golang-go)
/usr/bin/python3 -c 'import pytest' >/dev/null 2>&1 || missing+=(python3-pytest)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# The compose fleet test (it::compose) runs docker-compose.yml: Debian's docker-compose 1.29,
# unless a compose v2 plugin is there.
if [[ "${COVAL_SKIP_DOCKER:-}" != 1 ]] && ! docker compose version >/dev/null 2>&1; then
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
fi
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; }
fi

dev="${COVAL_DEV_DIR:-.dev}"
images=(python node go python-web node-web)
if [[ "${COVAL_SKIP_DOCKER:-}" != 1 ]]; then
  # The base images the tests run on build while the code compiles (their own lock makes the
  # tests' own calls wait for them and then find them built).
  step "scripts/build-base-images.sh ${images[*]} (in the background, log: $dev/images/build.log)"
  mkdir -p "$dev/images"
  scripts/build-base-images.sh "${images[@]}" >"$dev/images/build.log" 2>&1 &
  images_pid=$!
fi

step "embedded scripts: ruff, node --check, shellcheck, the warm-server protocol's fixtures"
# The sandbox's warm servers and its wrapper run inside the images, not as Rust: lint them and
# check both servers against the protocol's golden fixtures (crates/sandbox/protocol), each
# with the interpreter that runs it there (Debian's python3 and node).
readonly RUFF_VERSION=0.17.6 # pinned: a newer ruff's default rules may differ
# The Kubernetes JSON schemas, offline, for tests/it/k8s.rs (pinned: the schemas it carries).
readonly KUBERNETES_VALIDATE_VERSION=1.37.0
ruff_venv="$dev/venv"
ruff="$ruff_venv/bin/ruff"
venv_pip() {
  if [[ ! -x "$ruff_venv/bin/python" ]] || ! "$ruff_venv/bin/python" -c 'import pip' 2>/dev/null; then
    python3 -m venv --clear "$ruff_venv" >&2 || {
      # Debian's python3 ships venv and ensurepip separately.
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
      python3 -m venv --clear "$ruff_venv" >&2
    }
  fi
  "$ruff_venv/bin/python" -m pip install --disable-pip-version-check -q "$@" >&2
}
if [[ "$("$ruff" --version 2>/dev/null)" != "ruff $RUFF_VERSION" ]]; then
  venv_pip "ruff==$RUFF_VERSION"
fi
if [[ "$("$ruff_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" \
  != "$KUBERNETES_VALIDATE_VERSION" ]]; then
  venv_pip "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
"$ruff" check --no-cache crates/sandbox tests/k8s
node --check crates/sandbox/src/warm_node.js
# wrapper.sh has no shebang: its bytes are exactly the script the sandbox runs with `sh -c`.
shellcheck --shell=sh crates/sandbox/src/docker/wrapper.sh
shellcheck scripts/*.sh
shellcheck --shell=sh deploy/ci/coval-ci.sh
/usr/bin/python3 -m pytest -q -p no:cacheprovider crates/sandbox/tests/test_protocol.py
node --test crates/sandbox/tests/protocol.test.js

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# `--tests`: every library, binary and integration test, not rustdoc's doc-test runs. The
# workspace has no doc tests, and the 19 empty runs took 40 s; a crate that adds doc tests
# adds a `cargo test --doc` step here.
step "cargo test --workspace --locked --tests --no-run"
cargo test --workspace --locked --tests --no-run

if [[ -n "${images_pid:-}" ]]; then
  step "waiting for the base images"
  if ! wait "$images_pid"; then
    cat "$dev/images/build.log" >&2
    echo "building the base images failed (log above)" >&2
    exit 1
  fi
  grep -E 'total|skipping|done in' "$dev/images/build.log" >&2 || true
fi

step "cargo test --workspace --locked --tests $*"
cargo test --workspace --locked --tests "$@"

step "all checks passed"
