#!/usr/bin/env bash
# Install or upgrade fer-agent on this board, from a payload directory that
# push.sh (or the Ansible role) copied here. Runs as root; needs no internet.
#
#   sudo ./install.sh [--payload DIR] [--release ID] [--health-timeout S]
#                     [--keep N] [--config FILE] [--replace-config] [--no-start]
#
#   --config FILE      agent.yaml to use instead of the payload's default
#   --replace-config   overwrite an edited /etc/fer-agent/agent.yaml (old one kept as .bak)
#
# Payload layout (made by push.sh --stage-only):
#   VERSION                 release id, e.g. 0.1.0-3f9c2a1b
#   wheels/*.whl            fer_agent wheel + dependency wheels for this board (with
#                           onnxruntime_qnn-*.whl: installed as fer_agent[qnn], the NPU runtime,
#                           when this board has Python >= 3.11 and glibc >= 2.34)
#   bundle/                 model bundle (manifest.json, .tflite, .dlc)
#   fer-agent.service       the systemd unit
#   config/                 agent.yaml, secrets.env, snpe.env defaults
#   install.sh rollback.sh uninstall.sh lib.sh
#
# What it does (each step only when needed, so a second run changes nothing):
#   user fer-agent (system, groups video/render/fastrpc where present);
#   /opt/fer-agent/releases/<id>/{venv,bundle,deploy}; /etc/fer-agent/* with
#   edited files kept; the unit; /opt/fer-agent/current -> releases/<id> switched
#   in one rename, the old one kept as /opt/fer-agent/previous; enable + restart;
#   then waits for `fer-agent health`. An upgrade that does not start (systemctl
#   fails) or is not healthy within --health-timeout seconds is rolled back to the
#   previous release; the unit's journal lines since the start are printed first.
#
# A payload may leave out dependency wheels (push.sh does when the board's current release has the same
# ones): wheels.omitted lists them ("SHA256  wheels/NAME.whl" lines), and the release must then reuse
# the dependencies of an installed release with the same ones, or the install stops (exit 7).
#
# Exit: 0 ok; 1 error; 2 usage; 3 unhealthy, rolled back; 4 unhealthy, nothing to roll back to;
# 7 the payload left out dependency wheels that cannot be reused here (nothing changed: send them all).
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$HERE/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

PAYLOAD=$HERE
RELEASE=""
KEEP=3
REPLACE_CONFIG=0
CONFIG_SRC=""
START=1
while (($#)); do
    case $1 in
        --payload) PAYLOAD=${2:?--payload needs a directory}; shift 2 ;;
        --release) RELEASE=${2:?--release needs an id}; shift 2 ;;
        --health-timeout) HEALTH_TIMEOUT=${2:?--health-timeout needs seconds}; shift 2 ;;
        --keep) KEEP=${2:?--keep needs a number}; shift 2 ;;
        --config) CONFIG_SRC=${2:?--config needs a file}; shift 2 ;;
        --replace-config) REPLACE_CONFIG=1; shift ;;
        --no-start) START=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" 2 ;;
    esac
done
[[ "$HEALTH_TIMEOUT" =~ ^[0-9]+$ ]] || die "--health-timeout: expected whole seconds, got '$HEALTH_TIMEOUT'" 2
[[ "$KEEP" =~ ^[0-9]+$ && "$KEEP" -ge 2 ]] || die "--keep: expected a number >= 2 (current and previous), got '$KEEP'" 2
require_root "$@"

# ---------------------------------------------------------------- payload checks
PAYLOAD=$(cd "$PAYLOAD" 2>/dev/null && pwd) || die "payload directory not found: $PAYLOAD"
if [[ -z "$RELEASE" ]]; then
    [[ -f "$PAYLOAD/VERSION" ]] || die "$PAYLOAD/VERSION missing (or pass --release ID)"
    RELEASE=$(tr -d '[:space:]' <"$PAYLOAD/VERSION")
fi
[[ "$RELEASE" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "release id '$RELEASE' may only use letters, digits, . _ + -"
shopt -s nullglob
agent_wheels=("$PAYLOAD"/wheels/fer_agent-*.whl)
shopt -u nullglob
((${#agent_wheels[@]} == 1)) || die "expected exactly one fer_agent-*.whl in $PAYLOAD/wheels, found ${#agent_wheels[@]}"
[[ -f "$PAYLOAD/bundle/manifest.json" ]] || die "model bundle missing: $PAYLOAD/bundle/manifest.json"
[[ -f "$PAYLOAD/fer-agent.service" ]] || die "unit missing: $PAYLOAD/fer-agent.service"
for f in agent.yaml secrets.env snpe.env; do
    [[ -f "$PAYLOAD/config/$f" ]] || die "default config missing: $PAYLOAD/config/$f"
done
CONFIG_SRC=${CONFIG_SRC:-$PAYLOAD/config/agent.yaml}
[[ -f "$CONFIG_SRC" ]] || die "--config: no such file: $CONFIG_SRC"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python >= 3.10 (Ubuntu: apt install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); fer-agent needs Python >= 3.10"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
    die "$PYTHON has no venv/ensurepip; install it (Ubuntu: apt install python3-venv)"

# The qnn extra (onnxruntime + onnxruntime-qnn, the NPU runtime) when push.sh shipped its wheels and this
# board can load them; a payload built for another board of the fleet may not fit this one.
OMITTED=""
if [[ -f "$PAYLOAD/wheels.omitted" ]]; then
    OMITTED=$(cat "$PAYLOAD/wheels.omitted")
    if [[ -z "$OMITTED" ]] || grep -qvE '^[0-9a-f]{64}  wheels/[^/]+[.]whl$' <<<"$OMITTED"; then
        die "$PAYLOAD/wheels.omitted: expected lines 'SHA256  wheels/NAME.whl' (as sha256sum prints them)"
    fi
fi
AGENT_REQ=${agent_wheels[0]}
QNN_WHEEL=$({ (cd "$PAYLOAD/wheels" && find . -maxdepth 1 -name '*.whl' -printf '%P\n'); cut -d/ -f2 <<<"$OMITTED"; } |
    grep -m 1 '^onnxruntime_qnn-.*[.]whl$' || true)
QNN_NOTE=""
if [[ -n "$QNN_WHEEL" ]]; then
    read -r b_py b_glibc _ <<<"$(board_platform)"
    if qnn_fits "$b_py" "$b_glibc"; then
        AGENT_REQ="${agent_wheels[0]}[qnn]"
        QNN_NOTE="qnn: installing $QNN_WHEEL (the NPU runtime)"
    else
        QNN_NOTE="board $(hostname 2>/dev/null || echo '(this one)'): Python $b_py / glibc $b_glibc: no onnxruntime-qnn wheel for it; the agent will use snpe (if the SDK is installed) or tflite"
    fi
fi

# The sha256 of every file of the payload that gets installed (one pass: hashing 200 MB takes a while on
# a slow board), and from it two fingerprints. The release's: same id + other content is refused. The
# dependencies': every wheel but the agent's, what is installed from them (the qnn extra or not) and the
# Python the venv is built with; releases with the same one share their dependencies (reuse_dependencies).
# Left-out wheels count as present with the sha256 push.sh gave (the same release, the same fingerprint).
SUMS=$({ (cd "$PAYLOAD" && find wheels bundle -type f -print0 | xargs -0 -r sha256sum); [[ -z "$OMITTED" ]] ||
    printf '%s\n' "$OMITTED"; } | LC_ALL=C sort -k2)
FINGERPRINT=$(printf '%s\n' "$SUMS" | sha256sum | cut -d' ' -f1)
DEP_SUMS=$(grep -E '^[0-9a-f]{64}  wheels/[^/]+[.]whl$' <<<"$SUMS" | grep -v '^[0-9a-f]*  wheels/fer_agent-' || true)
DEPS=$(printf '%s\nextra %s\npython %s\n' "$DEP_SUMS" "${AGENT_REQ#"${agent_wheels[0]}"}" \
    "$("$PYTHON" -c 'import sys; print(sys.executable, sys.version)')" | sha256sum | cut -d' ' -f1)
DEP_WHEELS=$(grep -c . <<<"$DEP_SUMS" || true)

# ---------------------------------------------------------------- user and groups
if ! "$GETENT" group "$SERVICE_GROUP" >/dev/null; then
    "$GROUPADD" --system "$SERVICE_GROUP"
    changed "created group $SERVICE_GROUP"
fi
if ! "$GETENT" passwd "$SERVICE_USER" >/dev/null; then
    "$USERADD" --system --gid "$SERVICE_GROUP" --home-dir "$STATEDIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "fer-agent service" "$SERVICE_USER"
    changed "created system user $SERVICE_USER"
fi
for g in $EXTRA_GROUPS; do
    entry=$("$GETENT" group "$g" || true)
    [[ -n "$entry" ]] || continue  # this board has no such group
    members=${entry##*:}
    if [[ ",$members," != *",$SERVICE_USER,"* ]]; then
        "$USERMOD" --append --groups "$g" "$SERVICE_USER"
        changed "added $SERVICE_USER to group $g"
    fi
done

# ---------------------------------------------------------------- release
P=$(root "$PREFIX")
REL="$P/releases/$RELEASE"
ensure_dir "$P" 755 "$OWNER_ROOT"
ensure_dir "$P/releases" 755 "$OWNER_ROOT"

# bootstrap_wheels: the pip (and, below Python 3.12, setuptools) wheels this Python's ensurepip installs
# into a venv (upstream: ensurepip/_bundled; Debian and Ubuntu: /usr/share/python-wheels), one per line;
# nothing when they are not all there.
bootstrap_wheels() {
    "$PYTHON" - <<'EOF'
import glob, os, sys
import ensurepip
names = ["pip"] + (["setuptools"] if sys.version_info < (3, 12) else [])
for d in (os.path.join(os.path.dirname(ensurepip.__file__), "_bundled"), "/usr/share/python-wheels"):
    found = [sorted(glob.glob(os.path.join(d, f"{n}-*-py3-none-any.whl")))[-1:] for n in names]
    if all(found):
        print("\n".join(f[0] for f in found))
        break
EOF
}

# venv_with_pip: the release's venv, with pip. ensurepip byte-compiles pip (and setuptools) one file at a
# time, a minute on a slow board, so when the wheels it would use are found, the venv is made without pip
# and pip installs them from there with --no-compile; otherwise (or when that fails), ensurepip.
venv_with_pip() {
    local boot=()
    mapfile -t boot < <(bootstrap_wheels 2>/dev/null || true)
    if ((${#boot[@]})) && "$PYTHON" -m venv --without-pip "$REL/venv" &&
        "$REL/venv/bin/python" "${boot[0]}/pip" install --quiet --no-index --no-cache-dir \
            --disable-pip-version-check --no-compile "${boot[@]}" >&2; then
        return 0
    fi
    rm -rf "$REL/venv"
    "$PYTHON" -m venv "$REL/venv"
}

# full_venv: the release's venv from all the payload's wheels.
NEVER_IMPORTED="pip|sympy|mpmath"
full_venv() {
    [[ -z "$QNN_NOTE" ]] || log "$QNN_NOTE"
    venv_with_pip
    # --no-compile, then compileall on every core and without the dependencies' own test suites: pip
    # byte-compiles one file at a time, most of an install on a slow board. The .pyc files are still
    # wanted: the unit sets PYTHONDONTWRITEBYTECODE and the release is read-only to the agent, so
    # without them every start would compile numpy, OpenCV and LiteRT's Python again. Left out too: what
    # the service never imports and is a third of the files (NEVER_IMPORTED: pip, and sympy and mpmath,
    # which onnxruntime needs only for its model tools); they compile at import if anything imports them.
    "$REL/venv/bin/python" -m pip install --quiet --no-index --no-cache-dir --disable-pip-version-check \
        --no-compile --find-links "$PAYLOAD/wheels" "$AGENT_REQ" ||
        die "pip could not install ${agent_wheels[0]##*/} from $PAYLOAD/wheels (are wheels for this board's Python/arch there? push.sh collects them)"
    "$REL/venv/bin/python" -m compileall -q -j 0 -x "/tests?/|/site-packages/($NEVER_IMPORTED)/" "$REL/venv/lib" >/dev/null ||
        log "note: some files of release $RELEASE did not byte-compile (they compile at import instead)"
}

# reuse_dependencies: when an installed, complete release has the same dependencies (its .deps; current
# first, then previous, then the newest), the new venv is a hard-link copy of that venv with only the agent
# wheel reinstalled: on a slow board that skips unpacking and byte-compiling a few hundred MB of wheels.
# The old release stays as it was: pip unlinks the agent's files before it writes the new ones, and the
# files that name the venv's own path (scripts in bin/, pyvenv.cfg) are written as new files. Returns 1
# (nothing left behind, one line saying why) when there is nothing to reuse or a step fails: the caller
# then installs everything.
reuse_dependencies() {
    local src="" r why=""
    for r in "$(release_id_of "$P/current")" "$(release_id_of "$P/previous")" \
        $(for d in "$P"/releases/*/; do stat -c '%Y %n' "${d%/}"; done | sort -rn | sed 's|^[0-9]* .*/||'); do
        if [[ -n "$r" && "$r" != "$RELEASE" && -f "$P/releases/$r/.complete" && -x "$P/releases/$r/venv/bin/python" &&
            "$(cat "$P/releases/$r/.deps" 2>/dev/null)" == "$DEPS" ]]; then
            src=$r
            break
        fi
    done
    [[ -n "$src" ]] || return 1
    if ! cp -al "$P/releases/$src/venv" "$REL/venv" 2>/dev/null; then
        why="cp -al failed: no hard links on this file system?"
    elif ! relink_venv_paths "$REL/venv" "$P/releases/$src/venv" "$REL/venv"; then
        why="could not rewrite the venv path in $REL/venv/bin"
    elif ! "$REL/venv/bin/python" -m pip install --quiet --no-index --no-cache-dir --disable-pip-version-check \
        --no-compile --no-deps --force-reinstall "${agent_wheels[0]}" >&2; then
        why="pip could not reinstall ${agent_wheels[0]##*/} into the copy"
    elif ! compile_wheel_files "$REL/venv" "${agent_wheels[0]}"; then
        why="the agent's files did not byte-compile"
    fi
    if [[ -n "$why" ]]; then
        rm -rf "$REL/venv"
        local then="; installing all $DEP_WHEELS wheels"
        [[ -z "$OMITTED" ]] || then=""
        log "not reusing the dependencies of release $src ($why)$then"
        return 1
    fi
    log "reusing the dependencies of release $src (same $DEP_WHEELS wheels); installed ${agent_wheels[0]##*/} only"
}

# relink_venv_paths VENV OLD NEW: the scripts in VENV/bin and VENV/pyvenv.cfg that name OLD (the venv the
# copy was made from) name NEW instead, each written as a new file: the old inode belongs to the other release.
relink_venv_paths() {
    "$PYTHON" - "$@" <<'EOF'
import os, sys
venv, old, new = sys.argv[1], os.fsencode(sys.argv[2]), os.fsencode(sys.argv[3])
for path in [os.path.join(venv, "pyvenv.cfg")] + [e.path for e in os.scandir(os.path.join(venv, "bin"))]:
    if os.path.islink(path) or not os.path.isfile(path):
        continue
    with open(path, "rb") as fh:
        data = fh.read()
    if old in data:
        with open(path + ".new", "wb") as fh:
            fh.write(data.replace(old, new))
        os.chmod(path + ".new", os.stat(path).st_mode & 0o7777)
        os.replace(path + ".new", path)
EOF
}

# compile_wheel_files VENV WHEEL: byte-compile what WHEEL installed into VENV (its top-level packages and
# modules, without test suites), as full_venv's compileall does for everything.
compile_wheel_files() {
    "$1/bin/python" - "$2" >/dev/null <<'EOF'
import compileall, os, re, sys, sysconfig, zipfile
site = sysconfig.get_paths()["purelib"]
tops = {n.split("/")[0] for n in zipfile.ZipFile(sys.argv[1]).namelist()}
ok = True
for top in sorted(t for t in tops if not t.endswith((".dist-info", ".data"))):
    path = os.path.join(site, top)
    if os.path.isdir(path):
        ok = compileall.compile_dir(path, quiet=1, workers=0, rx=re.compile(r"/tests?/")) and ok
    elif path.endswith(".py") and os.path.isfile(path):
        ok = compileall.compile_file(path, quiet=1) and ok
sys.exit(0 if ok else 1)
EOF
}

if [[ -f "$REL/.complete" ]]; then
    if [[ "$(cat "$REL/.complete")" != "$FINGERPRINT" ]]; then
        die "release $RELEASE is already installed with different wheels/bundle; give the new build another id"
    fi
else
    if [[ -e "$REL" ]]; then
        [[ "$(release_id_of "$P/current")" != "$RELEASE" ]] || die "current release $RELEASE is incomplete; reinstall another id"
        log "removing incomplete release $RELEASE (an earlier install was interrupted)"
        rm -rf "$REL"
    fi
    log "installing release $RELEASE into ${REL#"$DESTDIR"}"
    mkdir -p "$REL"
    # A venv is not relocatable, so it is built in place; .complete is written last.
    if ! reuse_dependencies; then
        if [[ -n "$OMITTED" ]]; then
            rm -rf "$REL"
            die "the payload leaves out $(grep -c . <<<"$OMITTED") dependency wheels (wheels.omitted), and no installed release could lend them (above, if one had them); send the whole payload (push.sh does so by itself)" 7
        fi
        full_venv
    fi
    printf '%s\n' "$DEPS" >"$REL/.deps"
    printf '%s\n' "$DEP_SUMS" >"$REL/.dep-wheels"
    cp -R "$PAYLOAD/bundle" "$REL/bundle"
    mkdir -p "$REL/deploy"
    cp "$HERE/install.sh" "$HERE/rollback.sh" "$HERE/uninstall.sh" "$HERE/lib.sh" "$REL/deploy/"
    cp "$PAYLOAD/fer-agent.service" "$REL/deploy/fer-agent.service"
    cp -R "$PAYLOAD/config" "$REL/deploy/config"
    if [[ -f "$PAYLOAD/deploy.md" ]]; then cp "$PAYLOAD/deploy.md" "$REL/deploy/deploy.md"; fi
    printf '%s\n' "$FINGERPRINT" >"$REL/.complete"
    chmod -R u+rwX,go+rX,go-w "$REL"
    changed "release $RELEASE installed"
fi

# ---------------------------------------------------------------- config
C=$(root "$CONFDIR")
ensure_dir "$C" 750 "${OWNER_ROOT%%:*}:$SERVICE_GROUP"

sha256_of() { sha256sum <"$1" | cut -d' ' -f1; }

# install_conffile SRC DEST MODE OWNER: like dpkg conffiles. A missing file is
# installed; one still equal to what we installed last time follows the new
# default; one a person edited is kept and the new default lands beside it as
# DEST.new. --replace-config overwrites (keeping DEST.bak). The checksum of
# what we installed is kept in CONFDIR/.NAME.installed-sha256.
install_conffile() {
    local src=$1 dest=$2 mode=$3 owner=$4 sum new
    sum="$C/.$(basename "$dest").installed-sha256"
    new=$(sha256_of "$src")
    if [[ ! -e "$dest" ]]; then
        install -m "$mode" "$src" "$dest"
        printf '%s\n' "$new" >"$sum"
        changed "installed ${dest#"$DESTDIR"}"
    elif [[ "$(sha256_of "$dest")" == "$new" ]]; then
        [[ -f "$sum" && "$(cat "$sum")" == "$new" ]] || printf '%s\n' "$new" >"$sum"
    elif [[ "$REPLACE_CONFIG" == 1 ]] || [[ -f "$sum" && "$(sha256_of "$dest")" == "$(cat "$sum")" ]]; then
        cp -p "$dest" "$dest.bak"
        install -m "$mode" "$src" "$dest"
        printf '%s\n' "$new" >"$sum"
        changed "updated ${dest#"$DESTDIR"} (the old one is $(basename "$dest").bak)"
    elif ! cmp -s "$src" "$dest.new"; then
        install -m "$mode" "$src" "$dest.new"
        ensure_owner_mode "$dest.new" "$mode" "$owner"
        changed "kept your edited ${dest#"$DESTDIR"}; the new default is ${dest#"$DESTDIR"}.new"
    fi
    ensure_owner_mode "$dest" "$mode" "$owner"
}

# The config this release will run with: the one install_conffile leaves in place.
effective_config() {
    local dest="$C/agent.yaml" sum="$C/.agent.yaml.installed-sha256"
    if [[ ! -e "$dest" || "$REPLACE_CONFIG" == 1 ]]; then
        printf '%s' "$CONFIG_SRC"
    elif [[ -f "$sum" && "$(sha256_of "$dest")" == "$(cat "$sum")" ]]; then
        printf '%s' "$CONFIG_SRC"
    else
        printf '%s' "$dest"
    fi
}
# Refuse before anything switches, rather than restart into a config the new
# release cannot parse (and find out from the health check two minutes later).
CHECK_CFG=$(effective_config)
if ! check_out=$("$REL/venv/bin/fer-agent" check-config "$CHECK_CFG" 2>&1); then
    die "release $RELEASE rejects the config it would run with (${CHECK_CFG#"$DESTDIR"}): $(tail -n 1 <<<"$check_out"); fix the file and run install.sh again (nothing was switched)"
fi

install_conffile "$CONFIG_SRC" "$C/agent.yaml" 640 "${OWNER_ROOT%%:*}:$SERVICE_GROUP"
install_conffile "$PAYLOAD/config/snpe.env" "$C/snpe.env" 644 "$OWNER_ROOT"
# Secrets are never replaced, only created; systemd reads the file as root.
if [[ ! -e "$C/secrets.env" ]]; then
    install -m 600 "$PAYLOAD/config/secrets.env" "$C/secrets.env"
    changed "installed ${CONFDIR}/secrets.env (mode 0600: put FER_MQTT_PASSWORD=... there)"
fi
ensure_owner_mode "$C/secrets.env" 600 "$OWNER_ROOT"

# ---------------------------------------------------------------- unit and CLI link
U=$(root "$UNITDIR")
UNIT_CHANGED=0
mkdir -p "$U"
if ! cmp -s "$PAYLOAD/fer-agent.service" "$U/$UNIT"; then
    install -m 644 "$PAYLOAD/fer-agent.service" "$U/$UNIT"
    UNIT_CHANGED=1
    changed "installed ${UNITDIR}/$UNIT"
fi
B=$(root "$BINDIR")
mkdir -p "$B"
if [[ "$(link_target "$B/fer-agent")" != "$PREFIX/current/venv/bin/fer-agent" ]]; then
    switch_link "$PREFIX/current/venv/bin/fer-agent" "$B/fer-agent"
    changed "linked ${BINDIR}/fer-agent"
fi

# ---------------------------------------------------------------- switch release
OLD=$(release_id_of "$P/current")
SWITCHED=0
if [[ "$OLD" != "$RELEASE" ]]; then
    if [[ -n "$OLD" ]]; then
        switch_link "releases/$OLD" "$P/previous"
    fi
    switch_link "releases/$RELEASE" "$P/current"
    SWITCHED=1
    changed "current release: $RELEASE${OLD:+ (previous: $OLD)}"
fi

# ---------------------------------------------------------------- systemd
if ((UNIT_CHANGED)); then
    "$SYSTEMCTL" daemon-reload
fi
if ! "$SYSTEMCTL" is-enabled --quiet "$UNIT"; then
    "$SYSTEMCTL" enable "$UNIT"
    changed "enabled $UNIT"
fi

STARTED=0
START_OK=1
START_SINCE=$(date +%s)
if ((START)); then
    if ((SWITCHED || UNIT_CHANGED)) || [[ "$CHANGED" == 1 && -n "$OLD" ]]; then
        STARTED=1 verb=restart
    elif ! unit_active; then
        STARTED=1 verb=start
    fi
    if ((STARTED)); then
        if start_unit "$verb"; then changed "${verb}ed $UNIT"; else START_OK=0 CHANGED=1; fi
    fi
fi

# ---------------------------------------------------------------- health, rollback
# A release that does not start (systemctl fails: with Type=notify that is an ExecStart that exits, a
# missing READY=1 or a sandbox refusal) is judged like one that starts but never becomes healthy.
if ((STARTED)) && ((START_OK == 0 || HEALTH_TIMEOUT > 0)); then
    healthy=0
    if ((START_OK)); then
        log "waiting up to ${HEALTH_TIMEOUT} s for fer-agent health ..."
        if wait_healthy "$HEALTH_TIMEOUT"; then
            healthy=1
            log "healthy: ${LAST_HEALTH#healthy: }"
        else
            show_journal "$START_SINCE"
        fi
    fi
    if ((healthy)); then
        :
    elif ((SWITCHED)) && [[ -n "$OLD" && -f "$P/releases/$OLD/.complete" ]]; then
        log "release $RELEASE is unhealthy: $LAST_HEALTH"
        log "rolling back to $OLD"
        switch_link "releases/$OLD" "$P/current"
        switch_link "releases/$RELEASE" "$P/previous"
        if ! restart_after_rollback; then
            log "rolled back to $OLD, but it does not start either: $LAST_HEALTH"
        elif ((HEALTH_TIMEOUT == 0)); then
            log "rolled back to $OLD, which started (--health-timeout 0: health not checked)"
        elif wait_healthy "$HEALTH_TIMEOUT"; then
            log "rolled back to $OLD, which is healthy; $RELEASE stays installed for inspection"
        else
            log "rolled back to $OLD, but it is not healthy either: $LAST_HEALTH"
        fi
        exit 3
    else
        if ((SWITCHED)); then
            why="there is no previous release to roll back to"
        else
            why="this run changed config or unit, not the release, so there is nothing to roll back (old config: agent.yaml.bak)"
        fi
        log "release $RELEASE is unhealthy and $why: $LAST_HEALTH"
        log "check the config (${CONFDIR}/agent.yaml) and: journalctl -u ${UNIT%.service} -n 50"
        exit 4
    fi
fi

# ---------------------------------------------------------------- prune
keep_cur=$(release_id_of "$P/current")
keep_prev=$(release_id_of "$P/previous")
# newest first (by mtime of the release directory)
mapfile -t releases < <(for d in "$P"/releases/*/; do stat -c '%Y %n' "${d%/}"; done | sort -rn | sed 's|^[0-9]* .*/||')
# current and previous always stay; newer others fill up to --keep
kept=0
[[ -z "$keep_cur" ]] || kept=$((kept + 1))
[[ -z "$keep_prev" || "$keep_prev" == "$keep_cur" ]] || kept=$((kept + 1))
for r in "${releases[@]}"; do
    [[ "$r" != "$keep_cur" && "$r" != "$keep_prev" ]] || continue
    if ((kept < KEEP)); then
        kept=$((kept + 1))
        continue
    fi
    rm -rf "${P:?}/releases/$r"
    changed "removed old release $r"
done

if ((CHANGED)); then
    log "done: release $(release_id_of "$P/current") is current${keep_prev:+, previous $keep_prev}"
else
    log "nothing changed: release $RELEASE is already installed and running"
fi
