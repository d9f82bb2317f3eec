#!/usr/bin/env bash
# Install the Debian packages the tests drive for real (`make system-deps`, part of `make test`),
# without leaving a system service behind.
#
#   .ci/system-deps.sh PACKAGE...
#
# Only missing packages are installed. Debian's mosquitto package enables and
# starts a system broker on port 1883; the tests start their own brokers on
# free loopback ports, so when this script installed mosquitto it stops and
# disables that service again (systemd: `systemctl disable --now`; no systemd,
# e.g. a container: the init script's stop and `update-rc.d disable`, where
# they exist). A mosquitto that was installed before is left as it is, with a
# note when its service is enabled.
#
# Every system command is a variable so the tests can replace it with a
# recorder: DPKG, APT_GET, SYSTEMCTL, UPDATE_RC_D, SUDO, SYSTEMD_RUN_DIR
# (/run/systemd/system, present when systemd is PID 1), INIT_D (/etc/init.d).
set -euo pipefail

: "${DPKG:=dpkg}"
: "${APT_GET:=apt-get}"
: "${SYSTEMCTL:=systemctl}"
: "${UPDATE_RC_D:=update-rc.d}"
: "${SYSTEMD_RUN_DIR:=/run/systemd/system}"
: "${INIT_D:=/etc/init.d}"
if [[ -z "${SUDO+set}" ]]; then
    if [[ "$(id -u)" == 0 ]]; then SUDO=""; else SUDO=sudo; fi
fi
BROKER_SERVICE=mosquitto.service

log() { printf 'system-deps: %s\n' "$*" >&2; }

(($#)) || { log "usage: $0 PACKAGE..."; exit 2; }

missing=()
for p in "$@"; do
    "$DPKG" -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

# run CMD...: with $SUDO in front when there is one.
run() { if [[ -n "$SUDO" ]]; then "$SUDO" "$@"; else "$@"; fi; }

if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    run "$APT_GET" update -qq
    run env DEBIAN_FRONTEND=noninteractive "$APT_GET" install -y -qq --no-install-recommends "${missing[@]}"
fi

installed_broker=0
for p in "${missing[@]}"; do [[ "$p" != mosquitto ]] || installed_broker=1; done

if [[ -d "$SYSTEMD_RUN_DIR" ]]; then
    if ((installed_broker)); then
        run "$SYSTEMCTL" disable --now "$BROKER_SERVICE" >/dev/null 2>&1 ||
            { log "error: could not stop and disable $BROKER_SERVICE (systemctl disable --now $BROKER_SERVICE)"; exit 1; }
        log "stopped and disabled $BROKER_SERVICE, which the mosquitto package enabled (the tests start their own brokers)"
    elif "$SYSTEMCTL" is-enabled --quiet "$BROKER_SERVICE" >/dev/null 2>&1; then
        log "note: $BROKER_SERVICE is enabled (a broker on port 1883); the tests do not need it" \
            "(sudo systemctl disable --now $BROKER_SERVICE)"
    fi
elif ((installed_broker)); then
    # No systemd (a container): the package may have started the broker through its init script.
    if [[ -x "$INIT_D/mosquitto" ]]; then
        run "$INIT_D/mosquitto" stop >/dev/null 2>&1 || true
        run "$UPDATE_RC_D" mosquitto disable >/dev/null 2>&1 || true
        log "stopped and disabled the mosquitto init script the package installed (the tests start their own brokers)"
    fi
fi
