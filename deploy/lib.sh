# shellcheck shell=bash disable=SC2034
# (SC2034: CHANGED and LAST_HEALTH are read by the scripts that source this file.)
# Shared by install.sh, rollback.sh and uninstall.sh (sourced, never run).
#
# Every path goes through root() so the scripts can work inside a throwaway
# DESTDIR (tests, image builds); every system command is a variable so tests
# can replace it with a recorder. On a board all defaults apply and the
# scripts run as root.

: "${DESTDIR:=}"
: "${PREFIX:=/opt/fer-agent}"            # releases/<id>/, current -> releases/<id>, previous
: "${CONFDIR:=/etc/fer-agent}"           # agent.yaml, secrets.env, snpe.env
: "${UNITDIR:=/etc/systemd/system}"
: "${BINDIR:=/usr/local/bin}"            # fer-agent symlink for people (fer-agent health)
: "${STATEDIR:=/var/lib/fer-agent}"      # StateDirectory= (outbox); created by systemd
: "${UNIT:=fer-agent.service}"
: "${SERVICE_USER:=fer-agent}"
: "${SERVICE_GROUP:=$SERVICE_USER}"
: "${OWNER_ROOT:=root:root}"             # owner of code and root-only files
# Supplementary groups the agent user joins when the board has them: cameras
# (video), DRM render nodes (render), FastRPC nodes on some Qualcomm images.
: "${EXTRA_GROUPS:=video render fastrpc}"
: "${SYSTEMCTL:=systemctl}"
: "${JOURNALCTL:=journalctl}"
: "${USERADD:=useradd}"
: "${GROUPADD:=groupadd}"
: "${USERMOD:=usermod}"
: "${USERDEL:=userdel}"
: "${GROUPDEL:=groupdel}"
: "${GETENT:=getent}"
: "${CHOWN:=chown}"
: "${PYTHON:=python3}"
: "${HEALTH_TIMEOUT:=120}"               # seconds an upgrade gets to become healthy
: "${HEALTH_INTERVAL:=3}"

log() { printf 'fer-agent: %s\n' "$*" >&2; }
die() { printf 'fer-agent: error: %s\n' "$1" >&2; exit "${2:-1}"; }

# Path of $1 (an absolute path on the board) inside DESTDIR.
root() { printf '%s%s' "$DESTDIR" "$1"; }

# Set by changed(); read by the sourcing script.
CHANGED=0
changed() { CHANGED=1; log "$*"; }

require_root() {
    if [[ -z "$DESTDIR" && "$(id -u)" -ne 0 ]]; then
        die "run as root (sudo $0 $*), or set DESTDIR for a staging install" 2
    fi
}

# ensure_owner_mode PATH MODE OWNER:GROUP - touch metadata only when it differs,
# so a second run leaves ctime alone and reports nothing.
ensure_owner_mode() {
    local path=$1 mode=$2 owner=$3 cur_mode cur_owner
    cur_mode=$(stat -c '%a' "$path")
    cur_owner=$(stat -c '%U:%G' "$path")
    if [[ "$cur_owner" != "$owner" ]]; then
        "$CHOWN" -h "$owner" "$path"
        changed "owner of ${path#"$DESTDIR"} set to $owner"
    fi
    if [[ ! -L "$path" && "$((8#$cur_mode))" -ne "$((8#$mode))" ]]; then
        chmod "$mode" "$path"
        changed "mode of ${path#"$DESTDIR"} set to $mode"
    fi
}

ensure_dir() {  # PATH MODE OWNER:GROUP
    if [[ ! -d "$1" ]]; then
        mkdir -p "$1"
        changed "created ${1#"$DESTDIR"}"
    fi
    ensure_owner_mode "$1" "$2" "$3"
}

# Replace symlink $2 by one pointing at $1 in one rename(2): a reader (systemd
# starting ExecStart) sees the old or the new release, never neither.
switch_link() {
    local target=$1 link=$2 tmp
    tmp="$(dirname "$link")/.$(basename "$link").new.$$"
    ln -sfn "$target" "$tmp"
    mv -Tf "$tmp" "$link"
}

link_target() {
    if [[ -L "$1" ]]; then readlink "$1"; fi
}

release_id_of() {  # symlink -> release id ("" when absent)
    local t
    t=$(link_target "$1")
    if [[ -n "$t" ]]; then basename "$t"; fi
}

# "PY GLIBC ARCH" of $PYTHON on this board, e.g. "3.12 2.39 aarch64" (glibc "0.0" when it is not glibc).
board_platform() {
    "$PYTHON" -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1] or "0.0", platform.machine())'
}

# qnn_fits PY GLIBC: onnxruntime-qnn's board wheels are manylinux_2_34 (glibc >= 2.34), cp311 and newer
# (the same rule as push.sh and the Ansible role; push.sh also requires aarch64).
qnn_fits() {
    local py=${1#3.} glibc=${2#2.}
    [[ "$1" == 3.* && "$2" == 2.* && "$py" =~ ^[0-9]+$ && "$glibc" =~ ^[0-9]+$ ]] && ((py >= 11 && glibc >= 34))
}

unit_active() { "$SYSTEMCTL" is-active --quiet "$UNIT"; }

# show_journal SINCE_EPOCH: the unit's journal lines since then (the last 30), indented, on stderr, so
# whoever ran the script (push.sh over ssh, Ansible, a person) sees why a start failed without logging in.
JOURNAL_LINES=30
show_journal() {
    local lines
    lines=$("$JOURNALCTL" --unit "$UNIT" --since "@$1" --lines "$JOURNAL_LINES" --no-pager --no-hostname 2>&1) ||
        lines="(journalctl failed: $lines)"
    log "last lines of journalctl -u ${UNIT%.service}:"
    printf '%s\n' "${lines:-(no journal lines)}" | sed 's/^/    /' >&2
}

# start_unit VERB: systemctl VERB (start or restart) the unit; 0 when it started. With Type=notify a
# start that fails (ExecStart exits, READY=1 never comes, a sandbox setting refuses) makes systemctl
# exit non-zero: the caller decides what follows (roll back), so this never trips `set -e`. On failure
# LAST_HEALTH says so and the journal since the attempt is shown.
start_unit() {
    local verb=$1 since out
    since=$(date +%s)
    if out=$("$SYSTEMCTL" "$verb" "$UNIT" 2>&1); then
        return 0
    fi
    LAST_HEALTH="systemctl $verb $UNIT failed: $(head -n 1 <<<"$out")"
    log "$LAST_HEALTH"
    show_journal "$since"
    return 1
}

# restart_after_rollback: the releases were switched back; a crash loop of the bad release may have
# used up StartLimitBurst=, which would refuse this start too, so the counter is reset first.
restart_after_rollback() {
    "$SYSTEMCTL" reset-failed "$UNIT" >/dev/null 2>&1 || true
    start_unit restart
}

# The CLI of the release "current" points at.
current_cli() { printf '%s' "$(root "$PREFIX")/current/venv/bin/fer-agent"; }

health_once() {
    local cli
    cli=$(current_cli)
    [[ -x "$cli" ]] || { printf 'no fer-agent CLI at %s' "${cli#"$DESTDIR"}"; return 1; }
    "$cli" health --config "$(root "$CONFDIR")/agent.yaml" 2>&1
}

# wait_healthy SECONDS: 0 once `fer-agent health` passes; 1 after SECONDS.
# LAST_HEALTH keeps the last answer so callers can say why.
LAST_HEALTH=""
wait_healthy() {
    local timeout=$1 deadline=$((SECONDS + $1))
    while :; do
        if LAST_HEALTH=$(health_once); then
            return 0
        fi
        if "$SYSTEMCTL" is-failed --quiet "$UNIT"; then
            LAST_HEALTH="$UNIT failed (${LAST_HEALTH}); see: journalctl -u ${UNIT%.service} -n 50"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            LAST_HEALTH="not healthy after ${timeout} s: ${LAST_HEALTH}"
            return 1
        fi
        sleep "$HEALTH_INTERVAL"
    done
}
