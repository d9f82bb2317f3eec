"""Finding the Qualcomm SNPE/QAIRT SDK and its tools: shared by the board runtime and the host converter.

The SDK ships one ``bin/<arch>/`` directory per target toolchain
(x86_64-linux-clang on a workstation; aarch64-oe-linux-gcc*, aarch64-ubuntu-gcc*
on boards). Both sides look in the same places, in the same order, so an error
on either names the same searched paths. See ``docs/snpe.md``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from pathlib import Path

SDK_ENV_VARS = ("SNPE_ROOT", "QAIRT_SDK_ROOT")
ENV_OVERRIDE = "SNPE_NET_RUN"  # full path to snpe-net-run, wins over SDK discovery


def host_arch_dirs() -> tuple[str, ...]:
    """``bin/<arch>`` directory names to try, best first, for this machine.

    The SDK ships one directory per target toolchain (x86_64-linux-clang on a
    workstation; aarch64-oe-linux-gcc*, aarch64-ubuntu-gcc* on boards).
    """
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return ("x86_64-linux-clang",)
    if machine in ("aarch64", "arm64"):
        return (
            "aarch64-ubuntu-gcc9.4",
            "aarch64-oe-linux-gcc11.2",
            "aarch64-oe-linux-gcc9.3",
            "aarch64-oe-linux-gcc8.2",
            "aarch64-linux-clang",
        )
    return ()


def sdk_roots(explicit: str | None = None) -> list[tuple[str, Path]]:
    """Candidate SDK roots as ``(where it came from, path)``, in search order."""
    roots: list[tuple[str, Path]] = []
    if explicit:
        roots.append(("sdk_root", Path(explicit)))
    for var in SDK_ENV_VARS:
        val = os.environ.get(var)
        if val:
            roots.append((f"${var}", Path(val)))
    return roots


def tool_in_root(root: Path, tool: str) -> Path | None:
    """``<root>/bin/<arch>/<tool>`` for this machine's arch (then any arch dir, then ``<root>/bin``)."""
    bin_dir = root / "bin"
    for arch in host_arch_dirs():
        cand = bin_dir / arch / tool
        if _executable(cand):
            return cand
    if bin_dir.is_dir():
        for sub in sorted(p for p in bin_dir.iterdir() if p.is_dir()):
            if sub.name in host_arch_dirs():
                continue
            cand = sub / tool
            # Only arch dirs that can run here: same machine name in the dir name.
            if _executable(cand) and platform.machine().lower().split("_")[0] in sub.name:
                return cand
        if _executable(bin_dir / tool):
            return bin_dir / tool
    return None


def find_tool(tool: str, sdk_root: str | None = None, override: str | None = None) -> tuple[Path | None, list[str]]:
    """Locate an SDK tool; returns ``(path or None, places searched)`` for error messages."""
    searched: list[str] = []
    if override:
        p = Path(override)
        searched.append(f"override {p}")
        return (p if _executable(p) else None), searched
    env_override = os.environ.get(ENV_OVERRIDE) if tool == "snpe-net-run" else None
    if env_override:
        searched.append(f"${ENV_OVERRIDE}={env_override}")
        if _executable(Path(env_override)):
            return Path(env_override), searched
    for where, root in sdk_roots(sdk_root):
        searched.append(f"{where}={root}/bin/<{'|'.join(host_arch_dirs()) or 'arch'}>/")
        found = tool_in_root(root, tool)
        if found:
            return found, searched
    searched.append("PATH")
    which = shutil.which(tool)
    return (Path(which) if which else None), searched


def sdk_root_of(tool_path: Path) -> Path | None:
    """The SDK root a tool belongs to: ``<root>/bin/<arch>/tool`` (or ``<root>/bin/tool``) with ``<root>/lib``."""
    parent = tool_path.parent
    root = parent.parent.parent if parent.parent.name == "bin" else parent.parent if parent.name == "bin" else None
    if root is not None and ((root / "lib").is_dir() or (root / "sdk.yaml").exists()):
        return root
    return None


VERSION_RE = re.compile(r"(\d+\.\d+\.\d+(?:\.\d+)?)")


def sdk_version_in(root: Path | None) -> str | None:
    """SDK version from ``<root>/sdk.yaml`` (QAIRT), else from the root's name.

    Root names look like ``snpe-1.68.0.3932`` or ``2.26.0.240828``.
    """
    if root is None:
        return None
    meta = root / "sdk.yaml"
    try:
        text = meta.read_text(errors="replace") if meta.exists() else ""
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "version" and val.strip():
            return val.strip().strip("'\"")
    m = VERSION_RE.search(root.name)
    return m.group(1) if m else None


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)
