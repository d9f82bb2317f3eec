"""Detect stage: face boxes in frame pixels; one module per detector, discovered by :data:`DETECTORS`.

Haar and YuNet detect on a frame downscaled to ``detector.detect_width``
(faces the classifier can use are large anyway), BlazeFace on its own
letterboxed input, on whichever runtime the config and the bundle allow;
boxes are mapped back to full-frame pixels and the common filter applies
``min_face`` and ``max_faces`` (largest first). A new detector is one module
here with a :class:`Detector` subclass that sets ``name`` (and
``config_class`` for options of its own, its ``detector.<name>:`` section);
see :mod:`agent.detectors.base`. :mod:`agent.detectors.tiling` searches
overlapping tiles for a detector whose model sees the frame small.
"""

from __future__ import annotations

from agent.detectors.base import DETECTORS, Detection, Detector, DetectorConfig, create_detector

__all__ = ["DETECTORS", "Detection", "Detector", "DetectorConfig", "create_detector"]
