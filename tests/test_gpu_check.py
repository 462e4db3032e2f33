"""``benchmarks/gpu_check.sh --toy``: the GPU check's whole path on a CPU with toy shapes — the bench matrix, the
engine job through every stage, calibrate fed with the bench report, and the figures written into a report file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_report import BEGIN, END, write_section

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about a minute on 2 idle CPUs; the margin is for a machine shared with other work
def test_the_toy_gpu_check_runs_every_part_and_writes_its_figures(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(
        f"# Benchmarks\n\n## GPU check\n\n{BEGIN}\nnot yet measured\n{END}\n\n## Next\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "LORAPOD_HOME": str(tmp_path / "h")}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--toy", "--report", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1100, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_check" / "gpu_check.json").read_text(encoding="utf-8"))

    runs = {(run["setting"], run["batch"]): run for run in result["bench"]}
    for batch in (1, 4):
        default = runs[("engine defaults", batch)]
        assert default["status"] == "ok" and default["tokens_per_s"] > 0 and default["tokens_per_s_80"] > 0
    assert runs[("attention flash_attention_2", 4)]["status"] == "refused"  # a CPU has no FlashAttention
    assert runs[("liger kernels on", 4)]["status"] == "refused"
    assert runs[("embedding, norms, lm_head in bf16 (no upcast)", 4)]["status"] == "ok"

    job = result["job"]
    assert job["status"] == "ok", job
    assert job["stages"] == [
        "preprocessing",
        "model_loading",
        "training",
        "evaluating",
        "packaging",
        "uploading",
        "completed",
    ]
    assert job["speed_settings"].startswith("speed settings: attention auto → sdpa (rows kept apart)")
    assert (job["batch"], job["tokens_per_step"]) == (4, 4 * 512)
    assert job["optimizer_steps"] >= 1 and job["tokens_per_s"] > 0

    recorded = result["calibrate"]["recorded"]
    assert recorded["forced"] and recorded["conditions"]["toy"] and recorded["conditions"]["batch"] == 4

    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\n## GPU check\n\n") and text.endswith("\n\n## Next\n")
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert "not yet measured" not in section
    assert "TOY shapes on a CPU" in section
    assert "| bench: engine defaults | 4 |" in section
    assert "engine job: prepare → train → evaluate → package" in section


def test_a_report_without_the_markers_gets_the_section_at_its_end(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n", encoding="utf-8")
    write_section(report, "first")
    write_section(report, "second")
    assert report.read_text(encoding="utf-8") == f"# Benchmarks\n\n{BEGIN}\nsecond\n{END}\n"
