#!/usr/bin/env bash
# Installs Home Assistant $HA_VERSION into $HA_DIR once, for `make ha-test`: exactly the packages (and
# versions) listed in tests/homeassistant/requirements-$HA_VERSION.txt, nothing resolved at install time.
# A finished install is marked by a copy of that list; a changed list or a broken install starts afresh.
set -euo pipefail
: "${HA_VERSION:?}" "${HA_DIR:?}"
SUDO=${SUDO-}
lock="$(cd "$(dirname "$0")/.." && pwd)/tests/homeassistant/requirements-${HA_VERSION}.txt"
[ -f "$lock" ] || { echo "ha-install: no pinned list $lock" >&2; exit 2; }
if [ -x "$HA_DIR/bin/hass" ] && cmp -s "$lock" "$HA_DIR/.fer-installed"; then
    echo "ha-install: Home Assistant $HA_VERSION cached in $HA_DIR"
    exit 0
fi
# Home Assistant 2024.3 runs on Python 3.11 or 3.12 (Debian 12 ships 3.11).
python3 -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' || {
    echo "ha-install: Home Assistant $HA_VERSION needs Python 3.11 or 3.12, python3 is $(python3 --version)" >&2
    exit 2
}
python3 -c "import ensurepip" 2>/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv; }
echo "ha-install: installing Home Assistant $HA_VERSION into $HA_DIR"
rm -rf "$HA_DIR"
mkdir -p "$(dirname "$HA_DIR")"
python3 -m venv "$HA_DIR"
"$HA_DIR/bin/python" -m pip install -q --upgrade pip
"$HA_DIR/bin/python" -m pip install -q --no-deps -r "$lock"
"$HA_DIR/bin/python" -m pip check >/dev/null || { "$HA_DIR/bin/python" -m pip check >&2; exit 1; }
cp "$lock" "$HA_DIR/.fer-installed"
