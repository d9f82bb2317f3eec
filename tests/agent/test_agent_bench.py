"""``fer-agent bench --baseline``: the classifier's cost against another bundle, back to back."""

from __future__ import annotations

import math

from agent.bench import compare_classifiers, to_markdown
from agent.contracts.manifest import default_bundle_path


def test_baseline_comparison_times_both_and_reports_the_ratio():
    cmp = compare_classifiers(None, default_bundle_path(), iterations=40, rounds=4)
    assert cmp["bundle"] == cmp["baseline"]  # the default bundle against itself
    for model in ("int8", "float"):
        r = cmp[model]
        assert r["iterations"] == 40 and r["bundle_ms"] > 0 and r["baseline_ms"] > 0
        assert math.isclose(r["ratio"], r["bundle_ms"] / r["baseline_ms"], rel_tol=0.01)
        assert 0.5 < r["ratio"] < 2.0  # the same file, interleaved: no systematic difference
    md = to_markdown({"date": "d", "machine": {"cpu": "c", "cores": 2, "os": "o", "python": "p", "opencv": "4",
                                               "tflite_runtime": "t"}, "pinned": "all cores", "bundle": "b",
                      "frames": 0, "pipeline": [], "classifier": [], "command": "fer-agent bench", "baseline": cmp})
    assert f"| int8 | {cmp['int8']['bundle_ms']:.3f} | {cmp['int8']['baseline_ms']:.3f} | " in md
