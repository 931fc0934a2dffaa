#!/bin/sh
# The script part of coval's CI recipes (github-actions.yml, gitlab-ci.yml): submit a failing
# job's log to the coval workers, wait for the repair, and leave the report where the CI's
# comment or artifact step picks it up.
#
# usage: coval-ci.sh LOG [SOURCE_DIR]
#
# environment:
#   NATS_URL          the workers' NATS server (required)
#   NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY, NATS_CA, NATS_CERT,
#   NATS_KEY          credentials and TLS, read by coval itself (a publish-only identity is
#                     enough to submit; watching needs to read the events and reports)
#   COVAL             the coval binary (default: coval on PATH)
#   COVAL_OUT         where the report goes (default: coval-report)
#   COVAL_TIMEOUT     seconds to wait for the repair (default: 1800)
#   COVAL_DEDUP_KEY   the submission's key (default: the CI's run and job, so a retried job
#                     does not start a second repair)
#
# writes into COVAL_OUT: events.jsonl (one event per line), report.json, final.patch,
# decision.md, repair_report.md when the repair produced them, and comment.md (the patch and
# the decision, for a pull-request comment).
# exit code: coval's (0 fixed, 1 no validated fix or rebuild recommended, 2 bad input,
# 3 a service unreachable).
set -eu

log=${1:?usage: coval-ci.sh LOG [SOURCE_DIR]}
src=${2:-.}
coval=${COVAL:-coval}
out=${COVAL_OUT:-coval-report}
: "${NATS_URL:?set NATS_URL to the coval workers NATS server}"
mkdir -p "$out"
ws=$out/.coval

set -- submit --nats "$NATS_URL" -e "$log" -s "$src"
if [ -n "${COVAL_DEDUP_KEY:-}" ]; then
    set -- "$@" --dedup-key "$COVAL_DEDUP_KEY"
fi
id=$("$coval" --workspace "$ws" "$@")
echo "coval: repair $id" >&2

code=0
"$coval" --workspace "$ws" watch "$id" --nats "$NATS_URL" --json \
    --timeout "${COVAL_TIMEOUT:-1800}" >"$out/events.jsonl" || code=$?

dir=$ws/repairs/repair-$id
for f in report.json final.patch decision.md repair_report.md; do
    if [ -f "$dir/$f" ]; then
        cp "$dir/$f" "$out/$f"
    fi
done

# Backquotes in the texts below are Markdown, not shell.
# shellcheck disable=SC2016
{
    printf '### coval repair `%s`\n\n' "$id"
    if [ -f "$out/repair_report.md" ]; then
        grep -m 1 '^\*\*Outcome' "$out/repair_report.md" || true
    else
        printf 'The repair did not finish here (exit %s); `coval watch %s` follows it.\n' "$code" "$id"
    fi
    if [ -s "$out/final.patch" ]; then
        printf '\n```diff\n'
        cat "$out/final.patch"
        printf '```\n'
    fi
    if [ -f "$out/decision.md" ]; then
        printf '\n<details><summary>Why repair rather than rebuild</summary>\n\n'
        cat "$out/decision.md"
        printf '\n</details>\n'
    fi
    if [ -f "$out/repair_report.md" ]; then
        printf '\n<details><summary>Full report</summary>\n\n'
        cat "$out/repair_report.md"
        printf '\n</details>\n'
    fi
} >"$out/comment.md"

exit "$code"
