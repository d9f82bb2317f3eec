"""deploy/board-test/run.sh without a board: what it runs on the host before booting one (the face image it
ships) and its options. The board test itself is `make board-test` (docs/deploy.md, "An emulated board")."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "deploy" / "board-test" / "run.sh"


def test_the_face_image_snippet_runs_against_this_tree(tmp_path: Path) -> None:
    snippet = re.search(r"<<'PY'\n(.*?)\nPY\n", RUN.read_text(), re.S)
    assert snippet, "run.sh: the face image's Python snippet was not found"
    out = tmp_path / "face.jpg"
    r = subprocess.run([sys.executable, "-", str(out)], input=snippet.group(1), cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(out)) is not None


def test_unknown_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    r = subprocess.run(["bash", str(RUN), "--bogus"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown option: --bogus (usage: run.sh [--break-unit])" in r.stderr
    r = subprocess.run(["bash", str(RUN)], env={**env, "FER_BOARD_BREAK": "disk"}, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and 'FER_BOARD_BREAK=disk: only "unit" is known' in r.stderr
    assert not list(tmp_path.iterdir())  # no work directory, no qemu
