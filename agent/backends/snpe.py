"""snpe-net-run backend (Qualcomm SNPE / QAIRT). Work in progress: config only so far."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SnpeConfig:
    runtime: str = field(default="dsp", metadata={"doc": "cpu | gpu | dsp | aip"})
    timeout_s: float = field(default=5.0, metadata={"doc": "per snpe-net-run call"})
