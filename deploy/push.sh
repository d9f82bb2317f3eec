#!/usr/bin/env bash
# Build fer-agent on this host and install it on ONE board over ssh or adb.
# (For many boards use the Ansible playbook in deploy/ansible/.)
#
#   deploy/push.sh --ssh [user@]board [options]
#   deploy/push.sh --adb [serial]     [options]
#   deploy/push.sh --stage-only DIR   [options]   # just build the payload
#
# Steps: ask the board for its Python, arch and glibc; build the fer_agent
# wheel; download dependency wheels for that platform (or take --wheelhouse),
# with the `qnn` extra's onnxruntime + onnxruntime-qnn wheels (the NPU runtime)
# when the board can load them: aarch64, Python >= 3.11, glibc >= 2.34;
# copy the model bundle (with its DLC); stage the unit, default config and the
# board scripts; copy it all over; run install.sh there (which restarts the
# service and rolls back by itself if the new release does not start or is not
# healthy, printing the unit's journal lines); then
# wait until `fer-agent health` is healthy with the broker connected and, with
# --broker, until the agent's retained MQTT status is "online".
#
# Options:
#   --bundle DIR          model bundle to ship (default: agent/models/default)
#   --config FILE         agent.yaml for the board (installed only where none exists)
#   --wheel FILE          ship this fer_agent wheel instead of building one
#   --wheelhouse DIR      dependency wheels from DIR (offline host) instead of pip download; the
#                         fer_agent wheel is then built from DIR too (it needs a setuptools>=77 wheel there)
#   --python-version X.Y  board Python, --arch ARCH, --glibc X.Y: skip asking the board
#   --qnn auto|yes|no     add the qnn extra's wheels: auto (default) when the board can load them,
#                         yes: fail when it cannot, no: never (then the agent uses snpe or tflite)
#   --no-qnn              the same as --qnn no
#   --board-name NAME     the board's name in messages (default: the ssh/adb target)
#   --health-timeout S    how long the new release gets to be healthy (default 120)
#   --online-timeout S    then how long to wait for broker connected / status online (default 60)
#   --broker HOST[:PORT]  also wait for retained "online" on <prefix>/<device-id>/status
#   --device-id ID        (default: the board's hostname)   --prefix P (default: fer)
#   --remote-dir DIR      payload location on the board (default: /tmp/fer-agent-payload)
#   --remote-cli PATH     fer-agent on the board (default: /opt/fer-agent/current/venv/bin/fer-agent)
#   --ssh-opt OPT         extra ssh option, repeatable (e.g. --ssh-opt -p --ssh-opt 2222)
#   --keep-payload        leave the payload on the board
#   --full-payload        copy every dependency wheel, even those the board's current release has
# Environment: PYTHON (host Python with pip; default .venv/bin/python), SSH, ADB.
# An upgrade whose dependency wheels are exactly those of the board's current release (install.sh
# records their sha256 in the release's .dep-wheels) leaves them out of the copy and lists them in
# wheels.omitted: install.sh reuses that release's dependencies. If it cannot (exit 7), push.sh copies
# the whole payload and runs it again.
# Exit: 0 healthy and online; 1 error; 2 usage; 3 upgrade rolled back; 4 not healthy; 6 not online.
# On 1 (after copying), 4 and 6 it prints the last lines of the board's `journalctl -u fer-agent`.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
: "${SSH:=ssh}"
: "${ADB:=adb}"

log() { printf 'push: %s\n' "$*" >&2; }
die() { printf 'push: error: %s\n' "$1" >&2; exit "${2:-1}"; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

MODE="" TARGET="" STAGE_ONLY=""
BUNDLE="$REPO/agent/models/default" CONFIG="" WHEEL="" WHEELHOUSE=""
PYVER="" ARCH="" GLIBC="" QNN=auto BOARD_NAME=""
HEALTH_TIMEOUT=120 ONLINE_TIMEOUT=60
BROKER="" DEVICE_ID="" TOPIC_PREFIX=fer
REMOTE_DIR=/tmp/fer-agent-payload REMOTE_CLI=/opt/fer-agent/current/venv/bin/fer-agent
KEEP_PAYLOAD=0 FULL_PAYLOAD=0
SSH_OPTS=()
while (($#)); do
    case $1 in
        --ssh) MODE=ssh; TARGET=${2:?--ssh needs [user@]host}; shift 2 ;;
        --adb)
            MODE=adb
            if [[ $# -gt 1 && "$2" != --* ]]; then TARGET=$2; shift; fi
            shift ;;
        --stage-only) STAGE_ONLY=${2:?--stage-only needs a directory}; shift 2 ;;
        --bundle) BUNDLE=${2:?}; shift 2 ;;
        --config) CONFIG=${2:?}; shift 2 ;;
        --wheel) WHEEL=${2:?}; shift 2 ;;
        --wheelhouse) WHEELHOUSE=${2:?}; shift 2 ;;
        --python-version) PYVER=${2:?}; shift 2 ;;
        --arch) ARCH=${2:?}; shift 2 ;;
        --glibc) GLIBC=${2:?}; shift 2 ;;
        --qnn) QNN=${2:?--qnn needs auto, yes or no}; shift 2 ;;
        --no-qnn) QNN=no; shift ;;
        --board-name) BOARD_NAME=${2:?}; shift 2 ;;
        --health-timeout) HEALTH_TIMEOUT=${2:?}; shift 2 ;;
        --online-timeout) ONLINE_TIMEOUT=${2:?}; shift 2 ;;
        --broker) BROKER=${2:?}; shift 2 ;;
        --device-id) DEVICE_ID=${2:?}; shift 2 ;;
        --prefix) TOPIC_PREFIX=${2:?}; shift 2 ;;
        --remote-dir) REMOTE_DIR=${2:?}; shift 2 ;;
        --remote-cli) REMOTE_CLI=${2:?}; shift 2 ;;
        --ssh-opt) SSH_OPTS+=("${2:?}"); shift 2 ;;
        --keep-payload) KEEP_PAYLOAD=1; shift ;;
        --full-payload) FULL_PAYLOAD=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" 2 ;;
    esac
done
[[ -n "$MODE" || -n "$STAGE_ONLY" ]] || die "say where to: --ssh [user@]host, --adb [serial] or --stage-only DIR" 2
[[ "$QNN" =~ ^(auto|yes|no)$ ]] || die "--qnn: expected auto, yes or no, got '$QNN'" 2
for n in HEALTH_TIMEOUT ONLINE_TIMEOUT; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || die "--$(tr '[:upper:]_' '[:lower:]-' <<<"$n"): expected whole seconds, got '${!n}'" 2
done
[[ -f "$BUNDLE/manifest.json" ]] || die "model bundle not found: $BUNDLE/manifest.json (export one with fer-host, or pass --bundle)"
[[ -z "$CONFIG" || -f "$CONFIG" ]] || die "--config: no such file: $CONFIG"
[[ -z "$WHEEL" || -f "$WHEEL" ]] || die "--wheel: no such file: $WHEEL"
[[ -z "$WHEELHOUSE" || -d "$WHEELHOUSE" ]] || die "--wheelhouse: no such directory: $WHEELHOUSE"
[[ "$REMOTE_DIR" == /* && "$REMOTE_DIR" != / ]] || die "--remote-dir must be an absolute path other than /" 2

# ---------------------------------------------------------------- talking to the board
ADB_ARGS=()
[[ "$MODE" != adb || -z "$TARGET" ]] || ADB_ARGS=(-s "$TARGET")

# remote CMD: run a shell command on the board, with its output and exit status.
remote() {
    case $MODE in
        ssh) "$SSH" "${SSH_OPTS[@]}" "$TARGET" "$1" ;;
        adb)
            # old adb shells do not return the exit status: carry it in the output
            local out rc
            out=$("$ADB" "${ADB_ARGS[@]}" shell "$1; echo __FER_RC=\$?") || return 1
            rc=$(sed -n 's/^__FER_RC=\([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
            sed '/^__FER_RC=/d' <<<"$out" | tr -d '\r'
            return "${rc:-1}"
            ;;
    esac
}

# The service's last journal lines on the board: why it failed, without logging in to read them.
board_journal() {
    log "last lines of journalctl -u fer-agent on $(where):"
    { remote "$SUDO journalctl --unit fer-agent --lines 30 --no-pager --no-hostname 2>&1" || true; } |
        sed 's/^/    /' >&2
}

where() {
    case $MODE in
        ssh) printf '%s' "$TARGET" ;;
        adb) printf 'adb %s' "${TARGET:-device}" ;;
        *) printf '(--stage-only)' ;;
    esac
}

if [[ -n "$MODE" && ( -z "$PYVER" || -z "$ARCH" || -z "$GLIBC" ) ]]; then
    log "asking $(where) for its Python, arch and glibc ..."
    probe=$(remote "python3 -c 'import platform,sys; print(\"%d.%d\" % sys.version_info[:2], platform.machine(), platform.libc_ver()[1] or \"0.0\")'") ||
        die "cannot run python3 on $(where): is it reachable and is python3 (>= 3.10, with venv) installed?"
    read -r b_py b_arch b_glibc <<<"$(tail -n 1 <<<"$probe")"
    PYVER=${PYVER:-$b_py} ARCH=${ARCH:-$b_arch} GLIBC=${GLIBC:-$b_glibc}
fi
PYVER=${PYVER:-3.10} ARCH=${ARCH:-aarch64} GLIBC=${GLIBC:-2.31}
[[ "$PYVER" =~ ^3\.([0-9]+)$ ]] || die "board Python '$PYVER' is not 3.x"
((BASH_REMATCH[1] >= 10)) || die "board Python is $PYVER; fer-agent needs >= 3.10 (Ubuntu 22.04+, Qualcomm Linux 1.x)"
[[ "$GLIBC" =~ ^2\.([0-9]+)$ ]] || die "board glibc '$GLIBC' not understood (expected 2.N)"
GLIBC_MINOR=${BASH_REMATCH[1]}
log "board: Python $PYVER, $ARCH, glibc $GLIBC"

# ---------------------------------------------------------------- qnn (NPU) wheels?
# onnxruntime-qnn (>= 2.7) publishes aarch64 wheels only as manylinux_2_34 and only for cp311 and newer, so
# a board below either gets none (the same rule is in install.sh and the Ansible role's build.yml).
PY_MINOR=${PYVER#3.}
BOARD_NAME=${BOARD_NAME:-$(where)}
QNN_ADD=0
if [[ "$QNN" == no ]]; then
    log "qnn: off (--qnn no); the agent will use snpe (if the SDK is installed) or tflite"
elif [[ "$ARCH" == aarch64 ]] && ((PY_MINOR >= 11 && GLIBC_MINOR >= 34)); then
    QNN_ADD=1
else
    why="board $BOARD_NAME: Python $PYVER / glibc $GLIBC: no onnxruntime-qnn wheel for it"
    [[ "$ARCH" == aarch64 ]] || why="board $BOARD_NAME: $ARCH: no NPU wheel for it (onnxruntime-qnn for boards is aarch64)"
    [[ "$QNN" != yes ]] || die "$why (it needs aarch64, Python >= 3.11 and glibc >= 2.34; --qnn yes)"
    log "$why; the agent will use snpe (if the SDK is installed) or tflite"
fi

# ---------------------------------------------------------------- staging
if [[ -n "$STAGE_ONLY" ]]; then
    STAGE=$STAGE_ONLY
    if [[ -d "$STAGE" && -n "$(ls -A "$STAGE")" && ! -f "$STAGE/VERSION" ]]; then
        die "--stage-only: $STAGE is not empty and not an earlier payload; refusing to replace it"
    fi
    rm -rf "$STAGE"
    mkdir -p "$STAGE"
else
    STAGE=$(mktemp -d "${TMPDIR:-/tmp}/fer-agent-push.XXXXXX")
    SLIM=""
    trap 'rm -rf "$STAGE" ${SLIM:+"$SLIM"}' EXIT
fi
mkdir -p "$STAGE/wheels"

if [[ -n "$WHEEL" ]]; then
    cp "$WHEEL" "$STAGE/wheels/"
else
    log "building the fer_agent wheel ..."
    # From a clean copy of the sources: an in-tree build/ would leak stale modules into the wheel.
    SRC=$(mktemp -d "${TMPDIR:-/tmp}/fer-agent-src.XXXXXX")
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # tracked and new files git does not ignore, that still exist
        (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do if [[ -e "$f" ]]; then printf '%s\0' "$f"; fi; done |
            tar --null -T - -cf -) | tar -xf - -C "$SRC"
    else
        tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude=runs \
            --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C "$SRC"
    fi
    # In an isolated build environment (pip's default): pip installs pyproject.toml's build requirements
    # (setuptools>=77) there, so the host's own setuptools does not matter. With --wheelhouse (an offline
    # host) they come from that directory only.
    build_opts=()
    [[ -z "$WHEELHOUSE" ]] || build_opts=(--no-index --find-links "$WHEELHOUSE")
    if ! build_log=$("$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps "${build_opts[@]}" \
        --wheel-dir "$STAGE/wheels" "$SRC" 2>&1); then
        rm -rf "$SRC"
        if grep -q "matching distribution found for setuptools" <<<"$build_log"; then
            if [[ -n "$WHEELHOUSE" ]]; then
                die "building the wheel failed: no setuptools>=77 wheel in --wheelhouse $WHEELHOUSE for the isolated build (add one: $PYTHON -m pip download --dest $WHEELHOUSE 'setuptools>=77')"
            fi
            die "building the wheel failed: pip could not get setuptools>=77 for the isolated build (no package index? pass --wheelhouse DIR holding a setuptools>=77 wheel)"
        fi
        reason=$(grep -m 1 -E '^(ERROR|error):' <<<"$build_log" || tail -n 1 <<<"$build_log")
        die "building the wheel failed ($PYTHON -m pip wheel): ${reason:-no output}"
    fi
    rm -rf "$SRC"
fi
shopt -s nullglob
agent_wheels=("$STAGE"/wheels/fer_agent-*.whl)
shopt -u nullglob
((${#agent_wheels[@]} == 1)) || die "expected one fer_agent wheel, got ${#agent_wheels[@]}"
AGENT_VERSION=$(basename "${agent_wheels[0]}" | cut -d- -f2)

# The qnn extra's requirements as the wheel declares them, without their markers: pip evaluates markers
# for the host's Python, not for --python-version, so `fer_agent[qnn]` would follow the host's version.
qnn_reqs=()
if ((QNN_ADD)); then
    mapfile -t qnn_reqs < <("$PYTHON" - "${agent_wheels[0]}" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
for line in meta.splitlines():
    if line.startswith("Requires-Dist:"):
        req, _, marker = line[len("Requires-Dist:"):].partition(";")
        if re.search(r"extra\s*==\s*['\"]qnn['\"]", marker):
            print(req.strip())
PY
    )
    if ((${#qnn_reqs[@]} == 0)); then
        [[ "$QNN" != yes ]] || die "$(basename "${agent_wheels[0]}") declares no qnn extra (--qnn yes)"
        log "qnn: $(basename "${agent_wheels[0]}") declares no qnn extra; the agent will use snpe (if the SDK is installed) or tflite"
        QNN_ADD=0
    fi
fi

if [[ -n "$WHEELHOUSE" ]]; then
    log "dependency wheels from $WHEELHOUSE"
    skip=(! -name 'fer_agent-*')
    # without qnn, leave ONNX Runtime out (the board would not use it)
    ((QNN_ADD)) || skip+=(! -name 'onnxruntime-*' ! -name 'onnxruntime_qnn-*')
    find "$WHEELHOUSE" -maxdepth 1 -name '*.whl' "${skip[@]}" -exec cp {} "$STAGE/wheels/" \;
    if ((QNN_ADD)) && [[ -z "$(find "$STAGE/wheels" -maxdepth 1 -name 'onnxruntime_qnn-*.whl' -print -quit)" ]]; then
        [[ "$QNN" != yes ]] || die "--wheelhouse $WHEELHOUSE has no onnxruntime_qnn wheel (--qnn yes)"
        log "qnn: --wheelhouse $WHEELHOUSE has no onnxruntime_qnn wheel; the agent will use snpe (if the SDK is installed) or tflite"
        find "$STAGE/wheels" -maxdepth 1 \( -name 'onnxruntime-*.whl' -o -name 'onnxruntime_qnn-*.whl' \) -delete
        QNN_ADD=0
    fi
    ((QNN_ADD == 0)) || log "qnn: onnxruntime-qnn from $WHEELHOUSE (the NPU runtime)"
else
    # Every manylinux tag the board's glibc can load, newest first.
    platforms=()
    for ((m = GLIBC_MINOR; m >= 17; m--)); do platforms+=(--platform "manylinux_2_${m}_${ARCH}"); done
    platforms+=(--platform "manylinux2014_${ARCH}")
    abi="cp${PYVER/./}"
    log "downloading dependency wheels for cp$PYVER $ARCH ..."
    ((QNN_ADD == 0)) || log "qnn: adding ${qnn_reqs[*]} (manylinux_2_34_$ARCH, $abi: the NPU runtime)"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --python-version "$PYVER" --implementation cp --abi "$abi" --abi abi3 --abi none "${platforms[@]}" \
        --dest "$STAGE/wheels" "${agent_wheels[0]}" "${qnn_reqs[@]}" >&2 ||
        die "pip download failed: no internet, or no $ARCH wheel for Python $PYVER of some dependency (use --wheelhouse)"
fi

log "bundle $BUNDLE"
cp -R "$BUNDLE" "$STAGE/bundle"
rm -rf "$STAGE/bundle/saved_model"  # host-only, large
if ! grep -q '"dlc' "$STAGE/bundle/manifest.json"; then
    log "note: the bundle has no DLC; the board will use the TFLite backend (convert with fer-host to use SNPE)"
fi

cp "$REPO/systemd/fer-agent.service" "$STAGE/fer-agent.service"
cp -R "$REPO/deploy/config" "$STAGE/config"
[[ -z "$CONFIG" ]] || cp "$CONFIG" "$STAGE/config/agent.yaml"
for s in install.sh rollback.sh uninstall.sh lib.sh; do cp "$REPO/deploy/$s" "$STAGE/$s"; done
if [[ -f "$REPO/docs/deploy.md" ]]; then cp "$REPO/docs/deploy.md" "$STAGE/deploy.md"; fi

# Release id: package version + content hash, so the same build is the same
# release (install.sh then changes nothing) and any change makes a new one.
content=$(cd "$STAGE" && find wheels bundle config fer-agent.service -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-8)
RELEASE="$AGENT_VERSION-$content"
printf '%s\n' "$RELEASE" >"$STAGE/VERSION"
log "release $RELEASE: $(find "$STAGE/wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$STAGE" | cut -f1)"

if [[ -n "$STAGE_ONLY" ]]; then
    log "payload staged in $STAGE (copy it to a board and run: sudo ./install.sh)"
    exit 0
fi

# ---------------------------------------------------------------- copy and install
SUDO=""
if [[ "$MODE" == ssh && "$(remote 'id -u' | tail -n 1)" != 0 ]]; then
    SUDO="sudo -n"
    remote "sudo -n true" >/dev/null 2>&1 || die "$(where): ssh user is not root and sudo needs a password (use root@ or NOPASSWD)"
fi
# Dependency wheels the board's current release has (same names and sha256) stay here: SLIM is the payload
# without them, plus wheels.omitted listing them.
dep_sums=$(cd "$STAGE" && find wheels -maxdepth 1 -name '*.whl' ! -name 'fer_agent-*' -print0 | LC_ALL=C sort -z |
    xargs -0 -r sha256sum)
board_sums=$(remote "cat '${REMOTE_CLI%/venv/bin/fer-agent}/.dep-wheels' 2>/dev/null || true" 2>/dev/null || true)
if ((FULL_PAYLOAD == 0)) && [[ -n "$dep_sums" && "$board_sums" == "$dep_sums" ]]; then
    SLIM=$(mktemp -d "${TMPDIR:-/tmp}/fer-agent-push.XXXXXX")
    cp -al "$STAGE/." "$SLIM/" 2>/dev/null || cp -R "$STAGE/." "$SLIM/"  # hard links: no 200 MB copy
    while read -r _ f; do rm -f "${SLIM:?}/$f"; done <<<"$dep_sums"
    printf '%s\n' "$dep_sums" >"$SLIM/wheels.omitted"
    log "leaving out the $(grep -c . <<<"$dep_sums") dependency wheels the board's current release has ($(du -sh "$SLIM" | cut -f1) to copy; --full-payload to copy them)"
fi

# copy_and_install DIR: copy the payload in DIR to the board and run install.sh there; rc is its exit status.
copy_and_install() {
    log "copying to $(where):$REMOTE_DIR ..."
    remote "$SUDO rm -rf '$REMOTE_DIR' && mkdir -p '$REMOTE_DIR'" >/dev/null || die "cannot create $REMOTE_DIR on $(where)"
    case $MODE in
        ssh) tar -C "$1" -cf - . | "$SSH" "${SSH_OPTS[@]}" "$TARGET" "tar -xf - -C '$REMOTE_DIR'" ||
                 die "copying over ssh failed" ;;
        adb) "$ADB" "${ADB_ARGS[@]}" push "$1/." "$REMOTE_DIR" >/dev/null || die "adb push failed" ;;
    esac
    log "running install.sh on $(where) ..."
    set +e
    remote "$SUDO bash '$REMOTE_DIR/install.sh' --payload '$REMOTE_DIR' --health-timeout $HEALTH_TIMEOUT"
    rc=$?
    set -e
}
copy_and_install "${SLIM:-$STAGE}"
if ((rc == 7)) && [[ -n "$SLIM" ]]; then
    log "$(where) could not reuse its dependencies (above); copying the whole payload"
    copy_and_install "$STAGE"
fi
((KEEP_PAYLOAD)) || remote "$SUDO rm -rf '$REMOTE_DIR'" >/dev/null || true
case $rc in
    0) ;;
    3) die "release $RELEASE was not healthy on $(where) and was rolled back (reason and its journal above)" 3 ;;
    4) board_journal; die "release $RELEASE is installed on $(where) but not healthy (reason above)" 4 ;;
    *) board_journal; die "install.sh failed on $(where) (exit $rc)" ;;
esac

# ---------------------------------------------------------------- healthy and online
log "waiting up to ${ONLINE_TIMEOUT} s for $(where) to be healthy with the broker connected ..."
deadline=$((SECONDS + ONLINE_TIMEOUT))
while :; do
    answer=$(remote "$SUDO '$REMOTE_CLI' health --json" 2>/dev/null || true)
    verdict=$("$PYTHON" -c '
import json, sys
try:
    d = json.loads(sys.stdin.read())
except ValueError:
    print("no answer from fer-agent health --json"); sys.exit(1)
h = d.get("health") or {}
if not d.get("healthy"):
    print(d.get("message", "unhealthy")); sys.exit(1)
if not h.get("broker_connected"):
    print("healthy, but the broker is not connected (yet): " + d.get("message", "")); sys.exit(1)
print(d.get("message", "healthy"))
' <<<"$answer") && break
    if ((SECONDS >= deadline)); then
        board_journal
        die "$(where) not healthy and online after ${ONLINE_TIMEOUT} s: $verdict" 6
    fi
    sleep 3
done
log "healthy: $verdict"

if [[ -n "$BROKER" ]]; then
    [[ -n "$DEVICE_ID" ]] || DEVICE_ID=$(remote hostname | tail -n 1 | tr -d '[:space:]')
    topic="$TOPIC_PREFIX/$DEVICE_ID/status"
    log "waiting for \"online\" on $topic at $BROKER ..."
    BROKER="$BROKER" TOPIC="$topic" TIMEOUT="$ONLINE_TIMEOUT" "$PYTHON" -c '
import os, sys, threading
import paho.mqtt.client as mqtt
host, _, port = os.environ["BROKER"].rpartition(":") if ":" in os.environ["BROKER"] else (os.environ["BROKER"], "", "1883")
got, seen = threading.Event(), []
def on_connect(c, u, f, rc, p=None):
    c.subscribe(os.environ["TOPIC"], qos=1)
def on_message(c, u, m):
    seen.append(m.payload.decode(errors="replace"))
    if m.payload.strip() == b"online":
        got.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
c.on_connect, c.on_message = on_connect, on_message
try:
    c.connect(host, int(port), 30)
except OSError as e:
    print(f"cannot reach broker {host}:{port}: {e}"); sys.exit(1)
c.loop_start()
ok = got.wait(float(os.environ["TIMEOUT"]))
c.loop_stop()
print("status online" if ok else f"status is {seen[-1]!r}" if seen else "no status message")
sys.exit(0 if ok else 1)
' >&2 || { board_journal; die "no status=online from $DEVICE_ID on $BROKER within ${ONLINE_TIMEOUT} s" 6; }
fi
log "done: $(where) runs release $RELEASE"
