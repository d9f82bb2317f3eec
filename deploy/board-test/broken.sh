#!/usr/bin/env bash
# `make board-test-broken`: the test of the board test. Runs run.sh --break-unit (the service cannot
# start: its ExecStart gets an argument the agent rejects) and passes only when run.sh failed at
# first-push AND the board's `journalctl -u fer-agent`, which run.sh prints after a failure, holds the
# agent's own error about that argument.
#
#   sudo deploy/board-test/broken.sh        # same environment as run.sh (FER_BOARD_CACHE, PYTHON, ...)
#
# Exit: 0 the board test caught the broken unit; 1 it did not (or failed for another reason).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'board-test-broken: %s\n' "$*" >&2; }

OUT=$(mktemp "${TMPDIR:-/tmp}/fer-board-broken.XXXXXX")
trap 'rm -f "$OUT"' EXIT
rc=0
"$HERE/run.sh" --break-unit 2>&1 | tee "$OUT" >&2 || rc=${PIPESTATUS[0]}

if ((rc == 0)); then
    log "FAILED: run.sh --break-unit passed with a unit that cannot start"
    exit 1
fi
if ! grep -q 'board-test: step first-push: FAILED' "$OUT"; then
    log "FAILED: run.sh --break-unit exited $rc, but not at first-push (see above)"
    exit 1
fi
# The agent's own line (argparse: "unrecognized arguments: --broken-on-purpose"), as journald has it, in
# what run.sh itself printed after the failure (not only in what push.sh and install.sh print).
if ! sed -n '/board-test: ---- journalctl -u fer-agent/,$p' "$OUT" |
    grep -qE 'fer-agent\[[0-9]+\]: .*--broken-on-purpose'; then
    log "FAILED: run.sh --break-unit exited $rc, but the journal it printed has no line of the agent saying why"
    exit 1
fi
log "ok: run.sh --break-unit exited $rc at first-push and printed the board's journal:"
grep -E 'fer-agent\[[0-9]+\]: .*--broken-on-purpose' "$OUT" | head -n 2 | sed 's/^/    /' >&2
