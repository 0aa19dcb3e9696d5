"""`benchmarks/gpu_report.py --smoke`: the GPU report runs end to end on the CPU, so it is
known to work before a GPU is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .tiny_experiment import subprocess_env

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_report.py"


def test_gpu_report_smoke_writes_json_and_markdown(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--videos", "4",
                           "--steps", "2"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    assert report["device"] == "cpu (smoke)" and report["smoke"] is True
    for key in ("train_eager_fraction_of_peak", "train_best_fraction_of_peak"):
        assert key in report and report[key] is None  # no datasheet peak for a CPU
    assert [(r["variant"], r["mode"]) for r in report["models"]] == [
        (v, m) for m in ("train", "eval") for v in ("bottleneck", "late", "vanilla")]
    assert all(r["clips_per_s"] > 0 for r in report["models"])
    assert [(r["data"], r["workers"]) for r in report["data"]] == [("shards", 1), ("raw video", 1)]
    assert 0 <= report["data_wait_recommended"] < 1
    assert report["data_wait_recommended"] == report["data"][0]["data_wait"]
    assert report["media"]["videos"] == 4 and not report["left_out"]
    md = (tmp_path / "gpu-report.md").read_text()
    assert "| bottleneck train b2 |" in md and "| shards | 1 |" in md and "| raw video | 1 |" in md
