"""Calibrating the cost model from `python -m engine bench` reports, and what estimates rest on."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import presets
from store.costs import estimate
from store.db import Ledger
from store.jobs import create_job, transition
from store.metrics import record_metrics
from store.settings import load_settings
from store.status import JobStatus
from store.throughput import calibration_file, measurement_from_report
from tests.bench_helpers import H100, N_70B, gpu_report
from tests.conftest import ROOT, run_cli
from tui.cli import cli

PCIE = "NVIDIA H100 PCIe"
A100 = "NVIDIA A100-SXM4-80GB"


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def estimate_json(*args: str) -> dict[str, Any]:
    result = run_cli("estimate", "--tokens", "1000000", "--json", *args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def refused(result: Any, *fragments: str) -> None:
    """A clean refusal: exit 1, the message on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- a real CPU toy report ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `python -m engine bench --toy --device cpu --json` prints, in a file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "engine", "bench", "--toy", "--device", "cpu", "--steps", "1", "--warmup", "1"]
    done = subprocess.run(
        [*command, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return write(tmp_path_factory.mktemp("bench") / "toy.json", done.stdout)


@pytest.mark.slow
def test_a_cpu_toy_report_does_not_calibrate_h100_estimates_unless_forced(toy_report: Path, lorapod_home: Path) -> None:
    refused(run_cli("costs", "calibrate", str(toy_report)), "measured on CPU", "toy shapes", "--force")
    refused(run_cli("costs", "calibrate", str(toy_report), "--gpu", H100), "measured on CPU")
    refused(run_cli("costs", "calibrate", str(toy_report), "--force"), "--force needs --gpu")
    assert not calibration_file(lorapod_home).exists()
    assert estimate_json()["throughput_basis"]["kind"] == "public anchors"

    forced = run_cli("costs", "calibrate", str(toy_report), "--force", "--gpu", H100)
    assert forced.exit_code == 0, forced.output
    assert "WARNING: FORCED" in forced.stderr and "wildly wrong" in forced.stderr
    data = estimate_json()
    basis = data["throughput_basis"]
    assert basis["kind"] == "bench" and basis["measurement"]["forced"] is True
    assert "CPU" in data["throughput_source"] and "TOY shapes" in data["throughput_source"]
    # Used as measured: the toy model's tokens/s, scaled from its size to 70B, on the H100 it was forced onto.
    toy = json.loads(toy_report.read_text())["extrapolated"]
    expected = toy["tokens_per_s"] * (toy["parameters"] / 1e9) / 70
    assert data["tokens_per_second"][1] == pytest.approx(expected)
    human = run_cli("costs").stdout
    assert "→ in use 2. bench measurements" in human and "(FORCED)" in human

    cleared = run_cli("costs", "calibrate", "--clear")
    assert cleared.exit_code == 0 and "removed 1 bench measurement" in cleared.stdout
    assert estimate_json()["throughput_basis"]["kind"] == "public anchors"


# --- GPU reports ----------------------------------------------------------------------------------------


def test_a_gpu_report_anchors_its_gpu_and_scales_to_others(tmp_path: Path) -> None:
    report = write(tmp_path / "h100.json", gpu_report(measured_at="2026-11-20T10:00:00+00:00"))
    result = run_cli("costs", "calibrate", str(report))
    assert result.exit_code == 0, result.output
    assert "recorded for H100 SXM 80GB" in result.stdout and "resting on bench" in result.stdout
    settings = load_settings()
    per_70b = 1000.0 * (N_70B / 1e9) / 70  # the report's 70.55B, as tokens/s of a 70B model
    own = estimate(1_000_000, 70, H100, settings=settings)
    assert own.tokens_per_second == pytest.approx((0.8 * per_70b, per_70b))
    assert own.throughput_basis["kind"] == "bench"
    for words in (H100, "2026-11-20", "seq 4096 × batch 1", "NF4", "paged_adamw_8bit", "80-layer extrapolation"):
        assert words in own.throughput_source
    assert "scaled" not in own.throughput_source
    pcie = estimate(1_000_000, 70, PCIE, settings=settings)
    assert pcie.tokens_per_second[1] == pytest.approx(per_70b * 756 / 989)
    assert "scaled to H100 PCIe 80GB by bf16 TFLOP/s" in pcie.throughput_source
    small = estimate(1_000_000, 8, H100, settings=settings)
    assert small.tokens_per_second[1] == pytest.approx(per_70b * 70 / 8)
    assert "to 8B by model size" in small.throughput_source
    # Without the installation's settings (or with no measurement), the public anchors, named.
    anchors = estimate(1_000_000, 70, H100)
    assert anchors.tokens_per_second == (393.0, 786.0)
    assert "public anchors, not measured by lorapod" in anchors.throughput_source
    assert "FSDP-QLoRA" in anchors.throughput_source

    # The commands say it too, in words and in JSON.
    human = run_cli("estimate", "--tokens", "1000000", "--gpu", PCIE).stdout
    assert "resting on measured: `python -m engine bench --json` on NVIDIA H100 80GB HBM3" in human
    data = estimate_json()
    assert data["throughput_basis"]["measurement"]["conditions"]["optimizer"] == "paged_adamw_8bit"
    assert data["throughput_basis"]["measurement"]["measured_at"].startswith("2026-11-20")


def test_each_gpu_keeps_its_own_newest_measurement(tmp_path: Path) -> None:
    run_cli("costs", "calibrate", str(write(tmp_path / "a.json", gpu_report(H100, 900.0))))
    run_cli("costs", "calibrate", str(write(tmp_path / "b.json", gpu_report(A100, 400.0))))
    run_cli("costs", "calibrate", str(write(tmp_path / "c.json", gpu_report(H100, 1100.0))))
    settings = load_settings()
    per_70b = N_70B / 1e9 / 70
    assert estimate(1, 70, A100, settings=settings).tokens_per_second[1] == pytest.approx(400.0 * per_70b)
    assert estimate(1, 70, H100, settings=settings).tokens_per_second[1] == pytest.approx(1100.0 * per_70b)
    # A GPU with no measurement of its own scales from the reference GPU's (H100 SXM), not the A100's.
    assert estimate(1, 70, PCIE, settings=settings).tokens_per_second[1] == pytest.approx(1100 * per_70b * 756 / 989)
    bench = json.loads(run_cli("costs", "--json").stdout)["estimates_rest_on"]["bench"]
    assert sorted(m["gpu_id"] for m in bench) == [A100, H100]


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("tokens/s: 1000\n", ["not JSON (line 1, column 1", "python -m engine bench --json"]),
        ("[1, 2]", ["not a bench report (a JSON array"]),
        ({"tokens_per_s": 1000}, ["not a `python -m engine bench --json` report", "conditions: Field required"]),
        (gpu_report(tokens_per_s=None), ["no extrapolated tokens/s"]),
        (gpu_report("NVIDIA L40S"), ["measured on NVIDIA L40S", "does not list"]),
        (gpu_report(device="cpu", device_name="CPU (x86_64)"), ["measured on CPU (x86_64)", "--force"]),
        (gpu_report(toy=True), ["with toy shapes"]),
    ],
)
def test_bad_reports_are_refused_with_a_clear_message(
    tmp_path: Path, lorapod_home: Path, content: Any, fragments: list[str]
) -> None:
    refused(run_cli("costs", "calibrate", str(write(tmp_path / "report.json", content))), *fragments)
    assert not calibration_file(lorapod_home).exists()


def test_a_report_from_another_gpu_needs_force_and_says_so(tmp_path: Path) -> None:
    report = str(write(tmp_path / "h100.json", gpu_report(H100)))
    refused(run_cli("costs", "calibrate", report, "--gpu", A100), f"measured on {H100}, not {A100}")
    refused(run_cli("costs", "calibrate", report, "--gpu", "RTX 9090"), "unknown GPU 'RTX 9090'")
    forced = run_cli("costs", "calibrate", report, "--gpu", A100, "--force", "--json")
    assert forced.exit_code == 0 and "WARNING: FORCED" in forced.stderr
    assert json.loads(forced.stdout)["recorded"]["gpu_id"] == A100


def test_a_report_on_standard_input_and_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["costs", "calibrate", "-", "--json"], input=json.dumps(gpu_report()))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["recorded"]["source"] == "standard input"
    assert data["reference_estimate"]["rests_on"]["kind"] == "bench"
    missing = run_cli("costs", "calibrate", str(tmp_path / "nowhere.json"))
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_a_damaged_calibration_file_is_named_and_clear_repairs_it(lorapod_home: Path) -> None:
    lorapod_home.mkdir(parents=True, exist_ok=True)
    write(calibration_file(lorapod_home), "{not json")
    refused(run_cli("estimate", "--tokens", "1000"), "throughput-calibration.json: damaged", "--clear")
    assert run_cli("costs", "calibrate", "--clear").exit_code == 0
    assert estimate_json()["throughput_basis"]["kind"] == "public anchors"


# --- precedence -----------------------------------------------------------------------------------------


def _completed_job(ledger: Ledger, tokens_per_second: float) -> None:
    job = create_job(ledger, presets.get("balanced").to_spec("d.json"))
    transition(ledger, job.id, JobStatus.TRAINING, gpu_type=H100)
    record_metrics(ledger, job.id, [{"step": 10, "tokens_per_second": tokens_per_second}])
    transition(ledger, job.id, JobStatus.COMPLETED, actual_cost_usd=5.0)


def test_completed_jobs_come_before_a_bench_measurement(tmp_path: Path, ledger: Ledger) -> None:
    report = str(write(tmp_path / "h100.json", gpu_report(tokens_per_s=1000.0)))
    assert run_cli("costs", "calibrate", report).exit_code == 0
    assert estimate_json()["throughput_basis"]["kind"] == "bench"
    _completed_job(ledger, 600.0)
    data = estimate_json()
    assert data["throughput_basis"]["kind"] == "jobs"
    assert data["tokens_per_second"] == pytest.approx([600 * 0.85, 600 * 1.15])
    assert "measured on 1 completed job" in data["throughput_source"]
    # Calibrating again still records the measurement, and says the jobs come first.
    again = run_cli("costs", "calibrate", report)
    assert (
        again.exit_code == 0 and "completed jobs' throughput (measured on 1 completed job) comes first" in again.stdout
    )
    bases = json.loads(run_cli("costs", "--json").stdout)["estimates_rest_on"]
    assert bases["in_use"]["kind"] == "jobs" and len(bases["bench"]) == 1
    assert bases["order"][0] == "completed jobs"
    assert "→ in use 1. completed jobs" in run_cli("costs").stdout


def test_measurement_keeps_the_conditions_it_was_made_under() -> None:
    report = copy.deepcopy(gpu_report())
    report["conditions"]["attention"] = "sdpa"
    measurement, warnings = measurement_from_report(report)
    assert warnings == [] and not measurement.forced
    assert measurement.conditions["attention"] == "sdpa" and measurement.measured_at_from == "file date"
    assert "sdpa attention" in measurement.label and "Liger" not in measurement.label
    fused, _ = measurement_from_report(gpu_report(liger_kernel=True, torch_compile=True))
    assert "Liger kernels, torch.compile" in fused.label
    plain, warnings = measurement_from_report(gpu_report(load_in_4bit=False))
    assert "without 4-bit" in warnings[0] and "bf16 weights" in plain.label
