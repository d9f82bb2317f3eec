#!/usr/bin/env bash
# `make board-test`: the installer's whole flow against an emulated arm64 board (Debian 12 under
# qemu-system-aarch64, real systemd, the unit's sandbox), driven exactly as docs/deploy.md says:
#
#   boot -> push.sh (first install) -> service active, health, event on the host broker
#        -> push.sh of a second release (upgrade) -> push.sh of a broken release (rolled back by
#           itself, exit 3, the second release healthy again) -> uninstall.sh (nothing left)
#
#   sudo deploy/board-test/run.sh            # FER_BOARD_CACHE (default /var/cache/fer-agent-board)
#                                             # keeps the image between runs
#   sudo deploy/board-test/run.sh --break-unit   # the test of the test: must fail, showing the journal
#
# --break-unit (or FER_BOARD_BREAK=unit): before the first push, a drop-in on the board gives the
# unit's ExecStart an argument the agent rejects, so the service cannot start; the run must then fail
# at first-push with the board's journal in its output (deploy/board-test/broken.sh checks that). It
# pushes without the qnn extra (fewer wheels to install) and stops there.
#
# Every step has a hard time limit and prints its time, each output line with the seconds since the
# step began; a failing step prints the board's console and `journalctl -u fer-agent`. Network: QEMU user networking only (ssh forwarded from 127.0.0.1,
# the board reaches the host's loopback broker as 10.0.2.2); the host's mosquitto listens on
# 127.0.0.1 only. Every process it starts (qemu, mosquitto) is stopped by its pid.
set -euo pipefail
set -a  # every variable below reaches the steps, which run in `timeout bash -c`

REPO=${FER_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
HERE="$REPO/deploy/board-test"
CACHE=${FER_BOARD_CACHE:-/var/cache/fer-agent-board}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
# cortex-a76 (Armv8.2, as the Cortex-A78/A55 of a QCS6490) rather than `max`: no SVE, pointer
# authentication or MTE for TCG to emulate.
: "${BOARD_CPUS:=2}" "${BOARD_MEM:=2048}" "${BOARD_CPU:=cortex-a76}"
BREAK=${FER_BOARD_BREAK:-}
while (($#)); do
    case $1 in
        --break-unit) BREAK=unit; shift ;;
        *) printf 'board-test: unknown option: %s (usage: run.sh [--break-unit])\n' "$1" >&2; exit 2 ;;
    esac
done
[[ -z "$BREAK" || "$BREAK" == unit ]] || { printf 'board-test: FER_BOARD_BREAK=%s: only "unit" is known\n' "$BREAK" >&2; exit 2; }
T0=$SECONDS

log() { printf 'board-test: %s\n' "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fer-board-test.XXXXXX")
QEMU_PID="" BROKER_PID=""
cleanup() {
    local rc=$?
    for pid in $QEMU_PID $BROKER_PID; do
        if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    done
    for pid in $QEMU_PID $BROKER_PID; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    if ((rc == 0)); then rm -rf "$WORK"; else log "kept $WORK (console.log, broker.log, step logs)"; fi
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- on failure: what a person would look at
board() { timeout 60 "$WORK/ssh" board "$@"; }
post_mortem() {
    log "---- board console (last 60 lines of $WORK/console.log)"
    tail -n 60 "$WORK/console.log" 2>/dev/null | awk '{ print "    " $0 }' >&2 || true  # awk: ends the last line
    log "---- journalctl -u fer-agent (last 60 lines)"
    board "journalctl -u fer-agent -n 60 --no-pager --no-hostname; systemctl status fer-agent --no-pager -n 0" 2>&1 |
        sed 's/^/    /' >&2 || true
}

# stamp START: each line with the seconds since START (epoch seconds) in front.
stamp() { while IFS= read -r line; do printf '[%4d s] %s\n' $((EPOCHSECONDS - $1)) "$line"; done; }

# step NAME SECONDS CMD...: run CMD with a hard limit; its output goes to the terminal and WORK/NAME.log.
step() {
    local name=$1 limit=$2 start=$SECONDS rc=0
    shift 2
    log "step $name (limit ${limit} s) ..."
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout --kill-after=10 "$limit" bash -c 'set -euo pipefail; "$@"' step "$@" 2>&1 | stamp "$EPOCHSECONDS" |
        tee "$WORK/$name.log" >&2 || rc=${PIPESTATUS[0]}
    if ((rc != 0)); then
        ((rc == 124)) && log "step $name: timed out after ${limit} s"
        log "step $name: FAILED (exit $rc) after $((SECONDS - start)) s"
        post_mortem
        exit 1
    fi
    log "step $name: ok in $((SECONDS - start)) s"
    STEP_TIMES+=("$name $((SECONDS - start)) s")
}
STEP_TIMES=()

# ---------------------------------------------------------------- image, broker, board
# A still image with one face, looped: the emulated board has no camera. realtime: false, so the
# agent takes frames at its own (emulated, slow) pace, and at most one every 10 s (fps_cap), so that it
# does not keep an emulated core busy while the installer works beside it; health still wants a frame
# in the last 30 s. Made first: it needs nothing from the board.
(cd "$REPO" && "$PYTHON" - "$WORK/face.jpg" <<'PY'
import sys, cv2
from agent.synthetic import grid_frame
cv2.imwrite(sys.argv[1], grid_frame(1))
PY
)
image() { "$HERE/build-image.sh" "$CACHE" >"$WORK/image-dir"; }
export -f board image
step image 1800 image
IMAGE=$(cat "$WORK/image-dir")

BROKER_PORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$BROKER_PORT" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!

SSH_PORT=$(free_port)
cat >"$WORK/ssh" <<EOF
#!/usr/bin/env bash
# ssh [OPTION...] HOST COMMAND to the emulated board; HOST is ignored.
args=()
while ((\$# > 2)); do args+=("\$1"); shift; done
shift
exec ssh -i "$IMAGE/board_key" -p $SSH_PORT -o BatchMode=yes -o StrictHostKeyChecking=no \\
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 -o ServerAliveInterval=15 \\
    "\${args[@]}" root@127.0.0.1 "\$1"
EOF
chmod +x "$WORK/ssh"

qemu-img create -q -f qcow2 -b "$IMAGE/rootfs.raw" -F raw "$WORK/disk.qcow2"
# One host thread per emulated core (multi-threaded TCG); cache=unsafe: the overlay is thrown away.
qemu-system-aarch64 -M virt -accel tcg,thread=multi -cpu "$BOARD_CPU" -smp "$BOARD_CPUS" -m "$BOARD_MEM" \
    -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" -append "root=/dev/vda rw console=ttyAMA0 quiet" \
    -drive "file=$WORK/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" -device virtio-net-pci,netdev=n0 \
    -display none -monitor none -serial "file:$WORK/console.log" \
    -daemonize -pidfile "$WORK/qemu.pid"
QEMU_PID=$(cat "$WORK/qemu.pid")

wait_ssh() { until "$WORK/ssh" board true 2>/dev/null; do sleep 3; done; }
export -f wait_ssh
step boot 600 wait_ssh
# shellcheck disable=SC2016  # expanded on the board
board 'printf "board: %s, Python %s, glibc %s, systemd %s\n" "$(uname -m)" "$(python3 -c "import sys; print(sys.version.split()[0])")" "$(ldd --version | head -n 1 | grep -o "[0-9.]*$")" "$(systemctl --version | head -n 1 | cut -d" " -f2)"' >&2

# ---------------------------------------------------------------- what the board runs
board "mkdir -p /srv/fer-board-test && cat >/srv/fer-board-test/face.jpg && chmod 644 /srv/fer-board-test/face.jpg" <"$WORK/face.jpg"
config() {  # config FILE COMMENT
    cat >"$1" <<EOF
# $2
source:
  uri: /srv/fer-board-test/face.jpg
  loop: true
  realtime: false
  fps_cap: 0.1
model:
  bundle: /opt/fer-agent/current/bundle
backend:
  type: auto
mqtt:
  host: 10.0.2.2
  port: $BROKER_PORT
  device_id: fer-board
EOF
}
config "$WORK/release1.yaml" "board-test release 1"
config "$WORK/release2.yaml" "board-test release 2"

push() {  # push CONFIG [BUNDLE] [push.sh options]
    local cfg=$1 bundle=$2
    shift 2
    SSH="$WORK/ssh" PYTHON="$PYTHON" "$REPO/deploy/push.sh" --ssh root@fer-board --board-name fer-board \
        --bundle "$bundle" --config "$cfg" --health-timeout 600 --online-timeout 300 \
        --broker "127.0.0.1:$BROKER_PORT" --device-id fer-board "$@"
}
current() { board "basename \$(readlink /opt/fer-agent/current)" | tr -d '[:space:]'; }
export -f push current

# ---------------------------------------------------------------- the test of the test: a unit that cannot start
break_unit() {
    board "mkdir -p /etc/systemd/system/fer-agent.service.d && printf '%s\n' '[Service]' 'ExecStart=' \
        'ExecStart=/opt/fer-agent/current/venv/bin/fer-agent run --config /etc/fer-agent/agent.yaml --broken-on-purpose' \
        >/etc/systemd/system/fer-agent.service.d/broken-on-purpose.conf"
}
export -f break_unit
if [[ "$BREAK" == unit ]]; then
    step break-unit 60 break_unit
    step first-push 1500 push "$WORK/release1.yaml" "$REPO/agent/models/default" --no-qnn
    log "--break-unit: the first push passed with a unit that cannot start"
    exit 1
fi

# ---------------------------------------------------------------- 1. first push
step first-push 1500 push "$WORK/release1.yaml" "$REPO/agent/models/default"
R1=$(current)
check_first() {
    board "systemctl is-active fer-agent && systemctl show fer-agent -p NRestarts -p User -p ProtectSystem && fer-agent health"
    # the runtime the agent chose and why (no NPU here: tflite)
    board "journalctl -u fer-agent --no-pager -o cat | grep -m 3 -iE 'backend|runtime|tflite'" || true
}
export -f check_first
step first-checks 120 check_first
wait_event() { mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t fer/fer-board/events -C 1 -W 600 -v; }
export -f wait_event
step first-event 620 wait_event

# ---------------------------------------------------------------- 2. upgrade
step upgrade 1500 push "$WORK/release2.yaml" "$REPO/agent/models/default"
R2=$(current)
check_upgrade() {
    [[ "$R2" != "$R1" ]] || { echo "upgrade did not switch the release ($R1)"; return 1; }
    board "test \$(basename \$(readlink /opt/fer-agent/previous)) = $R1 && systemctl is-active fer-agent && fer-agent health"
}
export -f check_upgrade
step upgrade-checks 120 check_upgrade

# ---------------------------------------------------------------- 3. a broken release rolls back by itself
cp -R "$REPO/agent/models/default" "$WORK/broken-bundle"
printf 'tampered' >>"$WORK/broken-bundle/model.tflite"   # its sha256 no longer matches the manifest
broken_push() {
    local rc=0
    push "$WORK/release2.yaml" "$WORK/broken-bundle" || rc=$?
    ((rc == 3)) || { echo "push.sh of the broken release exited $rc, expected 3 (rolled back)"; return 1; }
}
export -f broken_push
step broken-release 1500 broken_push
check_rollback() {
    [[ "$(current)" == "$R2" ]] || { echo "current is $(current), expected $R2 after the rollback"; return 1; }
    board "systemctl is-active fer-agent && fer-agent health"
}
export -f check_rollback
step rollback-checks 300 check_rollback

# ---------------------------------------------------------------- 4. uninstall
uninstall() {
    board "/opt/fer-agent/current/deploy/uninstall.sh"
    board "! test -e /opt/fer-agent && ! test -e /etc/fer-agent && ! test -e /etc/systemd/system/fer-agent.service \
           && ! test -e /usr/local/bin/fer-agent && ! id fer-agent 2>/dev/null && ! systemctl is-active fer-agent"
}
export -f uninstall
step uninstall 300 uninstall

log "passed in $((SECONDS - T0)) s: ${STEP_TIMES[*]/%/,}"
