"""Lay out a fake SNPE/QAIRT SDK root whose tools are the stand-ins here.

The layout copies the real SDK's (``<root>/bin/<arch>/snpe-*``,
``<root>/lib/<arch>/``, ``<root>/sdk.yaml``) so SDK discovery is exercised as
on a real install. Each tool is a tiny shell wrapper that runs the stand-in
with a given Python (the test venv's, which has numpy and ai-edge-litert).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _standin import TOOLS, VERSION  # noqa: E402 - after the sys.path line above

HOST_ARCH = "x86_64-linux-clang"


def make_fake_sdk(
    root: Path,
    python: str = sys.executable,
    version: str = VERSION,
    arch: str = HOST_ARCH,
    tools: tuple[str, ...] = TOOLS,
) -> Path:
    """Create ``root`` as an SDK install; returns ``root``."""
    bin_dir = root / "bin" / arch
    bin_dir.mkdir(parents=True, exist_ok=True)
    (root / "lib" / arch).mkdir(parents=True, exist_ok=True)
    (root / "sdk.yaml").write_text(f"name: qairt-stand-in\nversion: {version}\n")
    for tool in tools:
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} {shlex.quote(str(HERE / tool))} "$@"\n')
        wrapper.chmod(0o755)
    return root


def tool_path(root: Path, tool: str, arch: str = HOST_ARCH) -> Path:
    return root / "bin" / arch / tool
