"""The Qualcomm SNPE / QAIRT SDK on the workstation: find it, name its version, run its tools.

Tool lookup is shared with the board (``agent.contracts.snpe_sdk.find_tool``:
``$SNPE_ROOT``, ``$QAIRT_SDK_ROOT``, then ``PATH``). What is host-only lives
here: the SDK version that goes into the manifest, and running a tool so that
a failure shows the exact command and the tool's own stderr, which is where
the SDK says which op it does not support.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agent.contracts.errors import FerError
from agent.contracts.snpe_sdk import SDK_ENV_VARS, VERSION_RE, find_tool, sdk_root_of, sdk_roots, sdk_version_in

# Phrases the converters print when the graph has an op they cannot map.
_UNSUPPORTED_RE = re.compile(r"(not supported|unsupported|no translation registered|unknown op)", re.IGNORECASE)


class SdkError(FerError):
    """The SDK or one of its tools is missing."""


class ToolFailed(FerError):
    """An SDK tool ran and failed; the message holds the command and its stderr."""


@dataclass
class Sdk:
    """One SDK install (``root`` is None when the tools were only found on PATH)."""

    root: Path | None
    version: str | None
    found_via: str
    explicit_root: str | None = None

    def tool(self, name: str) -> Path:
        path, searched = find_tool(name, str(self.root) if self.root else self.explicit_root)
        if path is None:
            raise SdkError(
                f"SNPE tool {name} not found (searched {'; '.join(searched)}); "
                f"is this SDK version {self.version or '?'} complete? See docs/snpe.md"
            )
        return path

    def has(self, name: str) -> bool:
        return find_tool(name, str(self.root) if self.root else self.explicit_root)[0] is not None

    def describe(self) -> str:
        return f"SNPE/QAIRT SDK {self.version or '(version unknown)'} at {self.root or 'PATH'} (via {self.found_via})"


def find_sdk(sdk_root: str | None = None, probe_tool: str = "snpe-net-run") -> Sdk:
    """Locate the SDK; :class:`SdkError` says where it looked and how to fix it."""
    for where, root in sdk_roots(sdk_root):
        if not root.is_dir():
            raise SdkError(f"{where} points to {root}, which is not a directory")
        if (root / "bin").is_dir():
            return Sdk(root=root, version=sdk_version(root), found_via=where, explicit_root=sdk_root)
        raise SdkError(
            f"{where}={root} has no bin/ directory; point it at the SDK root (the directory holding bin/, lib/)"
        )
    for tool in (probe_tool, "snpe-tensorflow-to-dlc", "snpe-dlc-quant", "snpe-dlc-quantize"):
        path, _ = find_tool(tool)
        if path is not None:
            root = sdk_root_of(path)
            return Sdk(root=root, version=sdk_version(root, path), found_via=f"PATH ({path})")
    raise SdkError(
        "Qualcomm SNPE/QAIRT SDK not found: set $SNPE_ROOT or $QAIRT_SDK_ROOT to the SDK root "
        f"(checked {', '.join('$' + v for v in SDK_ENV_VARS)} and PATH); use --dry-run to see the commands without it"
    )


def sdk_version(root: Path | None, tool: Path | None = None) -> str | None:
    """``agent.contracts.snpe_sdk.sdk_version_in`` (sdk.yaml, directory name), else ``<tool> --version``."""
    version = sdk_version_in(root)
    if version or tool is None:
        return version
    try:
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = VERSION_RE.search(out.stdout + out.stderr)
    return m.group(1) if m else None


def run_tool(cmd: list[str], timeout_s: float | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run one SDK command; any failure raises :class:`ToolFailed` with the command and stderr tail."""
    shown = shlex.join(cmd)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, check=False)
    except FileNotFoundError:
        raise SdkError(f"cannot run {cmd[0]}: no such file\n  command: {shown}") from None
    except OSError as exc:
        raise SdkError(f"cannot run {cmd[0]}: {exc.strerror}\n  command: {shown}") from None
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"{Path(cmd[0]).name} did not finish within {timeout_s:g} s\n  command: {shown}") from None
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout or "").strip()
        tail = "\n".join(f"  | {line}" for line in text.splitlines()[-15:]) or "  | (no output)"
        hint = ""
        if _UNSUPPORTED_RE.search(text):
            hint = (
                "\n  hint: the graph has an op this SDK's converter does not support; check the SDK's supported-ops "
                "list (docs/snpe.md) and change the model or try another converter (--source tflite / tensorflow)"
            )
        raise ToolFailed(
            f"{Path(cmd[0]).name} failed with exit code {proc.returncode}\n  command: {shown}\n  stderr:\n{tail}{hint}"
        )
    return proc
