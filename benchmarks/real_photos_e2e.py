"""Real photographs through the real ``fer-agent run``: one seat, each photo held 1 s, scored from MQTT events.

The single-frame form of ``real_photos.py`` calls the agent's detector and classifier directly; this is the
same photos as a person in front of a board meets them, measured from the outside exactly as
``benchmarks/e2e_accuracy.py`` measures its *one seat* scene (its clip writing, agent run, broker and event
parsing are reused from there):

* a stratified sample: ``n`` photos of each source (``numpy.random.default_rng(seed)``, the source's own label
  mix), ordered so that each photo's label differs from the one before where the sample allows (the expression
  changes at every hold);
* a 640x480 MP4 at 15 frames/s (written to a temporary directory and deleted afterwards: it is made from the
  dev set and never kept): 1 s of the mid-grey frame, then each photo held 1 s (15 frames) placed as
  :func:`real_photos.place` places it, then 0.5 s of grey;
* played in real time (``source.realtime``) to the installed ``fer-agent run`` with its default config,
  publishing to a fresh mosquitto on 127.0.0.1, and one change: ``tracking.update_interval_s`` 0.05, so every
  frame in which a face is seen also sends an ``update`` event. That changes no label (``update`` repeats the
  face's current one) and lets the events say whether the agent saw *this* photo's face: a face that was not
  seen again keeps its track (and the previous photo's label) for ``leave_after_s``, one whole hold;
* ours: a photo's prediction is the label the dashboard shows at the end of its hold (the face whose latest
  event lies inside the photo and has not left, as ``e2e_accuracy.seat_shown``) when an event of the hold lay
  inside the photo (*found*); otherwise no face. The JSON also counts the holds where the dashboard showed a
  label from an earlier photo (``shown_not_seen``);
* the peer: ``fer.FER(mtcnn=False).detect_emotions`` on every decoded frame of the same clip; the label of the
  last frame of the hold that found a face inside the photo (largest face), as ``e2e_accuracy`` scores it.

Both are scored by :func:`real_photos.score_groups`: per source and origin, accuracy (no face = wrong), macro
accuracy, per-class recall, found, confusion. Real time: 1 s per photo plus about 2.5 s.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by file path (the tests)
import real_photos as rp  # noqa: E402
from e2e_accuracy import (  # noqa: E402
    FPS,
    HOLD,
    LEAD_S,
    TAIL_S,
    AgentConfigRun,
    Ev,
    Hold,
    Plan,
    events_to_tracks,
    free_port,
    load_fer_peer,
    run_agent,
    run_peer,
    seat_shown,
    start_mosquitto,
    write_clip,
)

from agent.contracts.labels import LABELS  # noqa: E402

UPDATE_S = 0.05  # below one frame (1/15 s): an `update` event on every frame a face is seen


def sample(photos: rp.Photos, per_source: int, seed: int = 0) -> np.ndarray:
    """Indices of ``per_source`` random photos of each source, ordered so consecutive labels differ if they can."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(photos.source == s))[:per_source]
                          for s in np.unique(photos.source)])
    rest = list(rng.permutation(idx))
    order, last = [], None
    while rest:
        k = next((k for k, i in enumerate(rest) if photos.label[i] != last), 0)
        order.append(rest.pop(k))
        last = photos.label[order[-1]]
    return np.array(order, np.int64)


def subset(photos: rp.Photos, idx: np.ndarray) -> rp.Photos:
    return type(photos)(photos.jpeg[idx], photos.label[idx], photos.source[idx], photos.origin[idx])


def decode_placed(buf: bytes) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    import cv2

    return rp.place(cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR))


def plan_holds(photos: rp.Photos) -> Plan:
    """One hold per photo, in order, all at the middle of the frame; ``box``: the placed photo's rectangle."""
    holds, frame = [], int(round(LEAD_S * FPS))
    for i, buf in enumerate(photos.jpeg):
        holds.append(Hold("seat", i, int(photos.label[i]), frame, HOLD, decode_placed(buf)[1]))
        frame += HOLD
    return Plan(holds, frame + int(round(TAIL_S * FPS)), seed=0)


def agent_predictions(holds: list[Hold], tracks: dict[int, list[Ev]]) -> tuple[np.ndarray, int]:
    """Per hold: the label index the dashboard shows at its end when the agent saw the photo's face, else -1;
    and how many holds showed a label although that photo's face was never seen (an earlier photo's)."""
    pred, stale = np.full(len(holds), -1), 0
    for k, h in enumerate(holds):
        def near(box, rect=h.box) -> bool:
            return rp.inside(box, rect)

        seen = any(h.first <= e.frame < h.end and e.type != "left" and near(e.box)
                   for evs in tracks.values() for e in evs)
        shown = seat_shown(h.end, tracks, near=near)
        if shown is not None and seen:
            pred[k] = LABELS.index(shown)
        stale += shown is not None and not seen
    return pred, stale


def peer_predictions(holds: list[Hold], frames: list[list[tuple[tuple, str]]]) -> np.ndarray:
    """Per hold: the label of the largest face inside the photo on the last frame of the hold that found one."""
    pred = np.full(len(holds), -1)
    for k, h in enumerate(holds):
        for f in range(min(h.end, len(frames)) - 1, h.first - 1, -1):
            faces = [(b[2] * b[3], lab) for b, lab in frames[f] if rp.inside(b, h.box)]
            if faces:
                pred[k] = LABELS.index(max(faces)[1])
                break
    return pred


def run(photos: rp.Photos, per_source: int, seed: int, bundle: Path | None, peer: bool) -> dict[str, Any]:
    """Sample, write the clip, play it to ``fer-agent run`` (and the peer); the scores per source and origin."""
    chosen = subset(photos, sample(photos, per_source, seed))
    plan = plan_holds(chosen)
    config: dict[str, Any] = {"tracking": {"update_interval_s": UPDATE_S}}
    if bundle is not None:
        config["model"] = {"bundle": str(Path(bundle).resolve())}
    results: dict[str, Any] = {}
    grey = np.full((rp.FRAME_H, rp.FRAME_W, 3), rp.BACKGROUND, np.uint8)
    with tempfile.TemporaryDirectory(prefix="fer-photos-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "clip.mp4"  # made from the dev set: temporary, deleted with the directory
        write_clip(plan, None, clip, render=lambda h: decode_placed(chosen.jpeg[h.row])[0], bg=grey)
        print(f"# one seat: {len(plan.holds)} photos, {plan.frames / FPS:.0f} s of clip in real time", flush=True)
        port = free_port()
        (tmp / "broker").mkdir()
        broker = start_mosquitto(tmp / "broker", port)
        try:
            got = run_agent(clip, AgentConfigRun("photos", [], config), port, tmp, timeout_s=plan.frames / FPS + 120)
        finally:
            broker.terminate()
            broker.wait(timeout=5)
        tracks, _ = events_to_tracks(got["events"] + got["states"], got["dropped_frames"])
        pred, stale = agent_predictions(plan.holds, tracks)
        name = f"fer-agent run: {got['model'] or 'default bundle'}"
        results[name] = {"describe": f"{got['command']} ({got['detector_line']}), tracking.update_interval_s "
                                     f"{UPDATE_S}", "frames": got["frames"], "dropped_frames": got["dropped_frames"],
                         "events": len(got["events"]), "cpu_ms_per_frame": got["process_cpu_ms_per_frame"],
                         "shown_not_seen": stale, "groups": rp.score_groups(pred, chosen)}
        if peer:
            detector, why = load_fer_peer()
            if detector is None:
                print(f"# peer skipped: {why}", flush=True)
            else:
                frames = run_peer(detector, clip)
                results[why] = {"describe": "fer.FER(mtcnn=False).detect_emotions on every frame, last frame of the "
                                            "hold that found a face", "frames": len(frames["frames"]),
                                "cpu_ms_per_frame": frames["cpu_ms_per_frame"],
                                "groups": rp.score_groups(peer_predictions(plan.holds, frames["frames"]), chosen)}
    return {"per_source": per_source, "seed": seed, "photos": len(chosen), "fps": FPS, "hold_frames": HOLD,
            "seconds": round(plan.frames / FPS, 1), "results": results}


def markdown(e2e: dict[str, Any]) -> str:
    lines = [f"## One seat through `fer-agent run` ({e2e['per_source']} photos per source, seed {e2e['seed']})", "",
             f"{e2e['photos']} photos, each held 1 s at 15 frames/s in real time ({e2e['seconds']} s), scored from "
             "the MQTT events: the label the dashboard shows at the end of each hold; found = the agent's events "
             "saw the photo's face during its hold (see benchmarks/real_photos_e2e.py).", "",
             rp.table(e2e["results"]), ""]
    for name, r in e2e["results"].items():
        extra = f", dropped {r['dropped_frames']}, events {r['events']}, shown but not seen {r['shown_not_seen']}" \
            if "events" in r else ""
        lines.append(f"- {name}: {r['describe']}; frames {r['frames']}{extra}, CPU {r['cpu_ms_per_frame']} ms/frame")
    return "\n".join(lines)
