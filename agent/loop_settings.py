"""What the frame loop reads besides its stages: the ``publish:`` section and :class:`LoopSettings`.

The loop never sees the whole :class:`~agent.config.AgentConfig`: the runner
builds every stage (the tracker included) and hands :class:`~agent.pipeline.Pipeline`
this small frozen object with the few numbers the hot path needs. Keeping
:class:`PublishConfig` here (not in ``pipeline.py``) lets ``agent.config``
compose it without importing the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PublishConfig:
    state_interval_s: float = field(
        default=5.0,
        metadata={"doc": "publish the state snapshot at least this often (also on every event)", "min": 0.1},
    )
    stats_interval_s: float = field(
        default=30.0, metadata={"doc": "publish and log stage timings this often", "min": 1.0}
    )
    summary_interval_s: float = field(
        default=10.0, metadata={"doc": "publish the audience summary (retained) this often", "min": 1.0}
    )
    summary_window_s: float = field(
        default=60.0, metadata={"doc": "... over the last this many seconds (a sliding window)", "min": 1.0,
                                "max": 86400.0}
    )


@dataclass(frozen=True)
class LoopSettings:
    """The loop's own numbers, fixed for a run; :func:`agent.runner.loop_settings` reads them from the config."""

    max_faces: int  # detector.max_faces: rows of the preallocated face batch
    margin: float  # detector.margin: context added around each face box before the crop
    state_interval_s: float  # publish.state_interval_s
    max_frames: int = 0  # max_frames: 0 = until the source ends or a signal
