#!/usr/bin/env bash
# Switch fer-agent back to the previous release (or to --to ID), restart it and
# wait until `fer-agent health` passes. Run as root on the board:
#
#   sudo /opt/fer-agent/current/deploy/rollback.sh [--to ID] [--health-timeout S] [--list]
#
# current and previous swap places, so running it twice returns to where you
# started. Exit: 0 healthy; 1 error; 2 usage; 5 switched but not started or not healthy.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$HERE/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

TO=""
LIST=0
while (($#)); do
    case $1 in
        --to) TO=${2:?--to needs a release id}; shift 2 ;;
        --health-timeout) HEALTH_TIMEOUT=${2:?--health-timeout needs seconds}; shift 2 ;;
        --list) LIST=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" 2 ;;
    esac
done
[[ "$HEALTH_TIMEOUT" =~ ^[0-9]+$ ]] || die "--health-timeout: expected whole seconds, got '$HEALTH_TIMEOUT'" 2

P=$(root "$PREFIX")
CUR=$(release_id_of "$P/current")
PREV=$(release_id_of "$P/previous")

if ((LIST)); then
    for d in "$P"/releases/*/; do
        r=$(basename "$d")
        mark=""
        [[ "$r" == "$CUR" ]] && mark=" (current)"
        [[ "$r" == "$PREV" ]] && mark=" (previous)"
        [[ -f "$d/.complete" ]] || mark="$mark (incomplete)"
        printf '%s%s\n' "$r" "$mark"
    done
    exit 0
fi
require_root "$@"

[[ -n "$CUR" ]] || die "no current release under $PREFIX; nothing to roll back"
TARGET=${TO:-$PREV}
[[ -n "$TARGET" ]] || die "no previous release recorded ($PREFIX/previous); pick one with --to ID (see --list)"
[[ "$TARGET" != "$CUR" ]] || die "release $TARGET is already current"
[[ -f "$P/releases/$TARGET/.complete" ]] || die "release $TARGET is not installed completely under $PREFIX/releases"

switch_link "releases/$TARGET" "$P/current"
switch_link "releases/$CUR" "$P/previous"
log "current release: $TARGET (previous: $CUR)"
if ! restart_after_rollback; then
    log "release $TARGET does not start: $LAST_HEALTH"
    exit 5
fi
if ((HEALTH_TIMEOUT == 0)); then
    exit 0
fi
log "waiting up to ${HEALTH_TIMEOUT} s for fer-agent health ..."
if wait_healthy "$HEALTH_TIMEOUT"; then
    log "healthy: ${LAST_HEALTH#healthy: }"
else
    log "release $TARGET is not healthy: $LAST_HEALTH"
    exit 5
fi
