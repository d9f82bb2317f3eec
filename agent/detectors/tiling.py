"""Search a frame whole and in overlapping tiles, for a detector whose model sees the frame small.

BlazeFace sees a 640x480 frame at 128x128, so a face a fifth of the frame
wide reaches it at ~11 px and is missed. :class:`Tiling` runs a detector's
region pass (``run(image, ox, oy, k)`` -> boxes ``[K, 4]`` x0, y0, x1, y1 in
frame pixels, and their scores, before suppression) on the whole frame and on
an n x n grid of overlapping squares, and keeps from each tile only what the
whole frame cannot see well; the detector then suppresses duplicates over the
union as it would for one pass. Any detector with such a region pass can use
it; ``tiles: 1`` is the whole frame only.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

#: A detector's pass over one region: (image, x offset, y offset, shrink factor k) -> (boxes, scores).
RegionPass = Callable[[np.ndarray, int, int, int], tuple[np.ndarray, np.ndarray]]


class Tiling:
    def __init__(self, n: int, model_side: int) -> None:
        """``n``: tiles per side (1 = whole frame only); ``model_side``: the model's input side in pixels."""
        self.n = n
        self.model_side = model_side
        self._layout: tuple[tuple[int, int], list[tuple[int, int, int]]] | None = None
        self._half: np.ndarray | None = None

    def tiles(self, w: int, h: int) -> list[tuple[int, int, int]]:
        """n > 1: an n x n grid of overlapping squares (x0, y0, side), each about 1.25/n of the frame's long side,
        so a face of a fifth of the frame reaches the model at n times the whole frame's scale."""
        n = self.n
        if n <= 1:
            return []
        if self._layout is None or self._layout[0] != (w, h):
            side = min(w, h, int(round(max(w, h) / n * 1.25)))
            xs = np.linspace(0, w - side, n).round().astype(int)
            ys = np.linspace(0, h - side, n).round().astype(int)
            self._layout = ((w, h), [(int(x), int(y), side) for y in dict.fromkeys(ys) for x in dict.fromkeys(xs)])
        return self._layout[1]

    def search(self, frame: np.ndarray, run: RegionPass) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores of the whole frame plus what the tiles add, before suppression."""
        h, w = frame.shape[:2]
        tiles = self.tiles(w, h)
        # With tiles, every pass shrinks by 2x or more: halve the frame once (a fast exact 2x2 box filter) and cut
        # the passes from that, which halves the resizing (measured 2.65 -> 1.3 ms at 640x480, 2x2 tiles).
        k = 2 if tiles and min(side for _, _, side in tiles) >= 2 * self.model_side else 1
        image = frame
        if k == 2:
            if self._half is None or self._half.shape[:2] != (h // 2, w // 2):
                self._half = np.empty((h // 2, w // 2, 3), np.uint8)
            image = cv2.resize(frame[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), dst=self._half,
                               interpolation=cv2.INTER_AREA)
        found = [run(image, 0, 0, k)]
        for x0, y0, side in tiles:
            t = side // k
            boxes, scores = run(image[y0 // k : y0 // k + t, x0 // k : x0 // k + t], x0, y0, k)
            found.append(small_and_whole(boxes, scores, x0, y0, side, w, h))
        return np.concatenate([b for b, _ in found]), np.concatenate([sc for _, sc in found])


def small_and_whole(boxes: np.ndarray, scores: np.ndarray, x0: int, y0: int, side: int, w: int, h: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """What a tile adds: faces under half its side (bigger ones the whole frame sees well, and a tile's
    magnified clutter is where false faces come from), not cut by one of its inner edges (half a face)."""
    m = 0.02 * side
    keep = ((boxes[:, 2] - boxes[:, 0]) < side / 2) & ((boxes[:, 3] - boxes[:, 1]) < side / 2)
    keep &= (boxes[:, 0] > x0 + m) | (x0 == 0)
    keep &= (boxes[:, 1] > y0 + m) | (y0 == 0)
    keep &= (boxes[:, 2] < x0 + side - m) | (x0 + side >= w)
    keep &= (boxes[:, 3] < y0 + side - m) | (y0 + side >= h)
    return boxes[keep], scores[keep]
