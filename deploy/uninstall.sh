#!/usr/bin/env bash
# Remove everything install.sh put on this board. Run as root:
#
#   sudo /opt/fer-agent/current/deploy/uninstall.sh [--keep-config] [--keep-state]
#
# Removes: the service (stopped and disabled) and its unit, /usr/local/bin/fer-agent,
# /opt/fer-agent (all releases), /etc/fer-agent (unless --keep-config), the
# MQTT outbox in /var/lib/fer-agent (unless --keep-state) and the fer-agent
# user and group (kept with --keep-state, which still owns the state).
# Running it again when nothing is left is fine.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$HERE/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

KEEP_CONFIG=0
KEEP_STATE=0
while (($#)); do
    case $1 in
        --keep-config) KEEP_CONFIG=1; shift ;;
        --keep-state) KEEP_STATE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" 2 ;;
    esac
done
require_root "$@"

U=$(root "$UNITDIR")/$UNIT
if [[ -e "$U" ]]; then
    "$SYSTEMCTL" disable --now "$UNIT" || log "could not stop/disable $UNIT (continuing)"
    rm -f "$U"
    rm -rf "$U.d"
    "$SYSTEMCTL" daemon-reload
    "$SYSTEMCTL" reset-failed "$UNIT" 2>/dev/null || true
    changed "removed $UNIT"
fi

B=$(root "$BINDIR")/fer-agent
if [[ -L "$B" && "$(link_target "$B")" == "$PREFIX/"* ]]; then
    rm -f "$B"
    changed "removed $BINDIR/fer-agent"
fi

remove_tree() {
    if [[ -e "$1" || -L "$1" ]]; then
        rm -rf "$1"
        changed "removed ${1#"$DESTDIR"}"
    fi
}
remove_tree "$(root "$PREFIX")"
if ((KEEP_CONFIG)); then
    log "kept $CONFDIR (--keep-config)"
else
    remove_tree "$(root "$CONFDIR")"
fi
if ((KEEP_STATE)); then
    log "kept $STATEDIR and user $SERVICE_USER (--keep-state)"
else
    remove_tree "$(root "$STATEDIR")"
    if "$GETENT" passwd "$SERVICE_USER" >/dev/null; then
        "$USERDEL" "$SERVICE_USER"
        changed "removed user $SERVICE_USER"
    fi
    if "$GETENT" group "$SERVICE_GROUP" >/dev/null; then
        "$GROUPDEL" "$SERVICE_GROUP"
        changed "removed group $SERVICE_GROUP"
    fi
fi
if ((CHANGED)); then
    log "uninstalled"
else
    log "nothing to remove"
fi
