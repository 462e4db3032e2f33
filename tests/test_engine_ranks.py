"""A job on several ranks: gpu_count=2 trains as two gloo ranks on the CPU, through torch.distributed.run.

Rank 0 alone writes the record; the losses are a one-rank run's with the same global batch; a rank killed
leaves the job without a terminal event (interrupted) and a restart completes it; a cancel stops both ranks
at the same step with one checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from engine.config import JobSpec
from engine.dataset.stats import steps_for
from engine.workdir import Workdir
from tests.conftest import run_cli
from tests.engine_helpers import (
    SAMPLE,
    events,
    of_type,
    run_engine,
    stages,
    start_engine,
    step_losses,
    tiny_spec,
    wait_for,
    write_spec,
)

# Two ranks reduce the same gradients in another order than one process sums them: float32 rounding, no more.
LOSS_RTOL = 1e-3


def _two_ranks(model: Path, *overrides: str) -> JobSpec:
    # The sample packs into 16 sequences: a global batch of 2 divides every epoch, so no rank pads its last batch.
    return tiny_spec(model, SAMPLE, "gpu_count=2", "batch_size=1", *overrides)


def _assert_one_writer(items: list[dict]) -> None:
    seqs = [e["seq"] for e in items]
    assert seqs == sorted(set(seqs)), "duplicate or unordered seqs"
    trained = of_type(items, "metrics")
    logged = [(e["step"], e.get("eval_loss") is None) for e in trained]
    assert len(logged) == len(set(logged)), "a step logged twice: two ranks wrote events"
    assert stages(items).count("training") == 1


def test_two_ranks_complete_with_one_rank_s_losses(demo_model: Path, tmp_path: Path, lorapod_home: Path) -> None:
    two = run_engine(write_spec(_two_ranks(demo_model), tmp_path / "two.json"), tmp_path / "two")
    assert two.returncode == 0, two.stdout + two.stderr
    one_spec = tiny_spec(demo_model, SAMPLE, "batch_size=2")
    one = run_engine(write_spec(one_spec, tmp_path / "one.json"), tmp_path / "one")
    assert one.returncode == 0, one.stdout + one.stderr

    items = events(tmp_path / "two")
    assert stages(items)[-1] == "completed"
    _assert_one_writer(items)
    training = next(e for e in of_type(items, "stage") if e["stage"] == "training")
    assert training["world_size"] == 2 and training["parallelism"] == "ddp"
    assert "CPU ranks run data parallel" in training["message"]  # auto's choice, and why
    per_rank = [e["gpu_memory_gb_per_rank"] for e in of_type(items, "metrics")]
    assert all(m == [None, None] for m in per_rank)  # gathered from both ranks; no GPU here

    # One count of steps: what preprocessing announced is what the trainer ran, as stats counts it.
    dataset = of_type(items, "dataset")[0]
    assert dataset["steps_per_epoch"] == steps_for(dataset["packed_sequences"], 1, 1, 2) == 8
    assert max(e["total_steps"] for e in of_type(items, "metrics")) == dataset["total_steps"] == 16
    # ...and what `lorapod dataset stats` and `lorapod estimate` say of the same spec before it runs.
    same = ["--tokenizer", str(demo_model), "--preset", "smoke"]
    same += [
        f"--set={o}" for o in ("max_seq_length=512", "batch_size=1", "gradient_accumulation_steps=1", "gpu_count=2")
    ]
    stats = json.loads(run_cli("dataset", "stats", str(SAMPLE), *same, "--json").stdout)
    estimate = json.loads(run_cli("estimate", "--dataset", str(SAMPLE), *same, "--set=model_size_b=1", "--json").stdout)
    assert stats["steps_per_epoch"] == estimate["tokens_from"]["steps_per_epoch"] == 8

    losses, reference = step_losses(items), step_losses(events(tmp_path / "one"))
    assert sorted(losses) == sorted(reference) == list(range(1, dataset["total_steps"] + 1))
    for step, loss in reference.items():
        assert losses[step] == pytest.approx(loss, rel=LOSS_RTOL), f"step {step}"
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").exists()


def test_a_killed_rank_interrupts_the_job_and_a_restart_completes_it(demo_model: Path, tmp_path: Path) -> None:
    spec_path = write_spec(_two_ranks(demo_model, "num_epochs=4", "save_steps=4"), tmp_path / "spec.json")
    workdir = Workdir(tmp_path / "job")
    engine = start_engine(spec_path, workdir.root)
    try:
        wait_for(lambda: of_type(events(workdir.root), "checkpoint"), timeout=300)
        os.kill(int(workdir.rank_pid(1).read_text()), signal.SIGKILL)
        engine.wait(timeout=120)
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode != 0
    # No terminal event: a supervisor reads the job as interrupted, not failed or cancelled.
    assert stages(events(workdir.root))[-1] == "training"
    assert workdir.running_pid() is None

    again = run_engine(spec_path, workdir.root)
    assert again.returncode == 0, again.stdout + again.stderr
    items = events(workdir.root)
    assert stages(items)[-1] == "completed"
    seqs = [e["seq"] for e in items]
    assert seqs == sorted(set(seqs))
    assert any("resuming from checkpoint-" in e.get("message", "") for e in of_type(items, "log"))
    assert max(step_losses(items)) == 32


def test_a_cancel_stops_both_ranks_at_one_step_with_one_checkpoint(demo_model: Path, tmp_path: Path) -> None:
    spec = _two_ranks(demo_model, "num_epochs=20", "save_steps=1000", "eval_every_steps=1000")
    workdir = Workdir(tmp_path / "job")
    engine = start_engine(write_spec(spec, tmp_path / "spec.json"), workdir.root)
    try:
        wait_for(lambda: any(e.get("step", 0) >= 3 for e in of_type(events(workdir.root), "metrics")), timeout=300)
        engine.send_signal(signal.SIGTERM)  # what a supervisor does: the launcher asks every rank to stop
        engine.wait(timeout=120)
    finally:
        if engine.poll() is None:
            engine.kill()
    items = events(workdir.root)
    assert stages(items)[-1] == "cancelled"
    _assert_one_writer(items)
    checkpoints = of_type(items, "checkpoint")
    assert [c["reason"] for c in checkpoints] == ["cancel"]
    folders = workdir.checkpoint_dirs()
    assert [p.name for p in folders] == [f"checkpoint-{checkpoints[0]['step']}"]
    # Both ranks saved their state at that same step (each its own RNG state beside rank 0's weights).
    assert {p.name for p in folders[0].glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert checkpoints[0]["step"] < 140
    log = workdir.log_file.read_text(encoding="utf-8")
    assert "rank 1 ends: cancelled" in log


def test_fsdp_needs_several_gpus_and_the_rank_count_is_part_of_the_training(demo_model: Path) -> None:
    from engine import SpecError
    from engine.config import validate_spec

    one = tiny_spec(demo_model)
    with pytest.raises(SpecError, match="fsdp shards the model"):
        validate_spec({**one.model_dump(mode="json"), "resources": {"parallelism": "fsdp"}})
    two = tiny_spec(demo_model, SAMPLE, "gpu_count=2")
    assert two.training_hash() != one.training_hash()  # another global batch: another count of steps
    assert tiny_spec(demo_model, SAMPLE, "gpu_count=1").training_hash() == one.training_hash()


def test_fsdp_on_cpu_ranks_is_refused_by_name(demo_model: Path, tmp_path: Path) -> None:
    # accelerate would run CPU ranks as plain DDP under an FSDP setting; the job says so instead of pretending.
    spec = _two_ranks(demo_model, "parallelism=fsdp")
    result = run_engine(write_spec(spec, tmp_path / "spec.json"), tmp_path / "job")
    assert result.returncode != 0
    items = events(tmp_path / "job")
    assert stages(items)[-1] == "failed"
    error = of_type(items, "error")
    assert len(error) == 1 and error[0]["category"] == "spec"
    assert "parallelism=fsdp" in error[0]["message"] and "this machine has none" in error[0]["message"]
    assert "Traceback" not in result.stdout


def _alive(pid: int) -> bool:
    # A rank orphaned then ended may linger as a zombie nobody reaps: it counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_ranks_die_with_a_launcher_killed_hard(demo_model: Path, tmp_path: Path) -> None:
    # A SIGKILLed launcher cannot ask its ranks to stop; they must not train on, unwatched, holding the GPUs.
    spec = _two_ranks(demo_model, "num_epochs=20", "save_steps=1000", "eval_every_steps=1000")
    workdir = Workdir(tmp_path / "job")
    engine = start_engine(write_spec(spec, tmp_path / "spec.json"), workdir.root)
    ranks: list[int] = []
    try:
        wait_for(lambda: workdir.rank_pid(0).exists() and workdir.rank_pid(1).exists(), timeout=300)
        ranks = [int(workdir.rank_pid(r).read_text()) for r in (0, 1)]
        ranks.append(int(Path(f"/proc/{ranks[0]}/stat").read_text().rsplit(")", 1)[1].split()[1]))  # the agent
        engine.kill()
        engine.wait(timeout=30)
        wait_for(lambda: not any(_alive(pid) for pid in ranks), timeout=60)
    finally:
        for pid in ranks:  # a failing run must not leave them (or torch's agent) running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if engine.poll() is None:
            engine.kill()
