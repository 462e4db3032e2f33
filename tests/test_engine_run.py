"""The engine end to end on CPU with the demo model: stages, packages, resume, cancel and failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import signal
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from engine.events import parse_event
from engine.packaging import verify_package
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

pytestmark = pytest.mark.slow
PIPELINE = ["preprocessing", "model_loading", "training", "evaluating", "packaging", "uploading", "completed"]
SECRET = "hf_secret_value_that_must_never_be_written"
WEBHOOK_SECRET = "whsec_also_never_written"


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def reference_run(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted smoke run (with a webhook receiver), shared by the tests that read it."""
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    workdir = tmp_path_factory.mktemp("reference")
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    spec = write_spec(tiny_spec(demo_model, SAMPLE, f"webhook_url={url}"), workdir.parent / "reference.json")
    result = run_engine(spec, workdir, HF_TOKEN=SECRET, TRAINING_WEBHOOK_SECRET=WEBHOOK_SECRET)
    server.shutdown()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def test_a_smoke_run_completes_every_stage_and_the_loss_falls(reference_run: Path) -> None:
    items = events(reference_run)
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
    for item in items:
        parse_event(item)  # every line is a valid, versioned event
    assert stages(items) == PIPELINE
    assert items[-1]["type"] == "stage" and items[-1]["stage"] == "completed"  # the last word
    losses = list(step_losses(items).values())
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    dataset = of_type(items, "dataset")[0]
    # Both repairs ran by default, and the event says how much each changed.
    assert set(dataset["repairs"]) == {"unescape", "drop_truncated"}
    assert {"texts", "replies"} <= set(dataset["repairs"]["unescape"])
    metrics = of_type(items, "metrics")
    assert metrics[-1]["step"] == metrics[-1]["total_steps"] == dataset["total_steps"]
    assert any(m.get("eval_loss") is not None for m in metrics)
    assert of_type(items, "status") and of_type(items, "heartbeat")
    evaluation = json.loads((reference_run / "eval.json").read_text())
    assert evaluation["adapter_perplexity"] < evaluation["base_perplexity"]
    # The last step is evaluated too, and the packaged adapter is the checkpoint with the lowest eval loss.
    evaluated = {m["step"]: m["eval_loss"] for m in metrics if m.get("eval_loss") is not None}
    assert dataset["total_steps"] in evaluated
    best = evaluation["best_checkpoint"]
    assert best == {"step": min(evaluated, key=lambda s: (evaluated[s], s)), "eval_loss": min(evaluated.values())}
    # The trainer's periodic eval loss is token-weighted, as the final evaluation is: at the same weights they agree.
    assert evaluation["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-3)
    assert set(evaluation["targets"]) == {"perplexity", "human", "retention", "persona"}
    assert evaluation["targets"]["human"]["status"] == "not measured"
    assert evaluation["generations"] and evaluation["generations"][0]["adapter"]


def test_three_packages_verify_and_the_adapter_reloads_and_generates(reference_run: Path) -> None:
    artifacts = {e["kind"]: e for e in of_type(events(reference_run), "artifact")}
    assert set(artifacts) == {"adapter", "full", "deploy"}
    for kind, event in artifacts.items():
        path = Path(event["path"])
        assert path.name.endswith(f"-{kind}.zip")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == event["sha256"]
        assert verify_package(path) == []
    with zipfile.ZipFile(artifacts["deploy"]["path"]) as deploy:
        names = set(deploy.namelist())
        assert {"inference.py", "requirements.txt", "README.md", "example_prompts.jsonl"} <= names
        assert "adapter/adapter_model.safetensors" in names and "adapter/tokenizer_config.json" in names
        assert "transformers==" in deploy.read("requirements.txt").decode()
    with zipfile.ZipFile(artifacts["full"]["path"]) as full:
        assert {"spec.json", "events.jsonl", "metrics.csv", "eval.json", "logs/engine.log"} <= set(full.namelist())
        dataset_manifest = json.loads(full.read("dataset/manifest.json"))
        best = json.loads(full.read("eval.json"))["best_checkpoint"]
    for event in artifacts.values():
        with zipfile.ZipFile(event["path"]) as package:
            manifest = json.loads(package.read("manifest.json"))
            assert manifest["dataset_repairs"] == dataset_manifest["repairs"]
            assert manifest["best_checkpoint"] == best
    from safetensors.torch import load_file

    packaged = load_file(str(reference_run / "adapter" / "adapter_model.safetensors"))
    chosen = load_file(str(reference_run / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors"))
    assert packaged.keys() == chosen.keys() and all(packaged[k].equal(chosen[k]) for k in packaged)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = reference_run / "adapter"
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, adapter)
    messages = [{"role": "user", "content": "How should I think about an emergency fund?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_secrets_never_reach_the_workdir(reference_run: Path) -> None:
    for path in reference_run.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            assert WEBHOOK_SECRET.encode() not in data, path
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as archive:
                    for name in archive.namelist():
                        assert SECRET.encode() not in archive.read(name), f"{path.name}:{name}"


def test_webhooks_arrive_signed(reference_run: Path) -> None:
    from engine.webhooks import verify_signature

    deliveries = _Receiver.received
    assert deliveries
    statuses = []
    for headers, body in deliveries:
        assert verify_signature(body, headers["X-Webhook-Signature"], WEBHOOK_SECRET, tolerance_s=3600)
        payload = json.loads(body)
        assert {"job_id", "status", "step", "total_steps", "metrics", "timestamp"} <= set(payload)
        statuses.append(payload["status"])
    assert "training" in statuses and statuses[-1] == "completed"


def test_kill_9_then_restart_resumes_with_identical_losses(
    reference_run: Path, demo_model: Path, tmp_path: Path
) -> None:
    spec = tiny_spec(demo_model, SAMPLE)
    reference = step_losses(events(reference_run))
    total = max(reference)
    spec_path = write_spec(spec, tmp_path / "spec.json")
    workdir = tmp_path / "work"
    process = start_engine(spec_path, workdir)
    first = wait_for(lambda: of_type(events(workdir), "checkpoint"), timeout=120)[0]["step"]
    kill_at = random.Random().randint(first + 1, total - 1)
    wait_for(lambda: max(step_losses(events(workdir)) or [0]) >= kill_at, timeout=120)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    killed = events(workdir)
    assert stages(killed)[-1] == "training"  # no terminal event: the process died

    result = run_engine(spec_path, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = events(workdir)
    assert stages(resumed)[-1] == "completed"
    assert [e["seq"] for e in resumed] == list(range(1, len(resumed) + 1))  # monotonic across the restart
    logs = [e["message"] for e in of_type(resumed, "log")]
    resumed_from = max(e["step"] for e in of_type(killed, "checkpoint"))
    assert f"resuming from checkpoint-{resumed_from} (same spec" in " ".join(logs)
    losses = step_losses(resumed)
    after = [step for step in losses if step > resumed_from]
    assert after and all(losses[step] == reference[step] for step in after), (resumed_from, kill_at)


def test_sigterm_cancels_after_a_checkpoint_and_a_restart_finishes(demo_model: Path, tmp_path: Path) -> None:
    spec_path = write_spec(tiny_spec(demo_model, SAMPLE), tmp_path / "spec.json")
    workdir = tmp_path / "work"
    process = start_engine(spec_path, workdir)
    wait_for(lambda: max(step_losses(events(workdir)) or [0]) >= 2, timeout=120)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    cancelled = events(workdir)
    assert stages(cancelled)[-1] == "cancelled"
    last_checkpoint = of_type(cancelled, "checkpoint")[-1]
    assert last_checkpoint["reason"] == "cancel"
    assert (workdir / "checkpoints" / f"checkpoint-{last_checkpoint['step']}" / "lorapod.json").exists()

    result = run_engine(spec_path, workdir)
    assert result.returncode == 0
    assert stages(events(workdir))[-1] == "completed"


def test_a_cancel_request_before_training_stops_cleanly(demo_model: Path, tmp_path: Path) -> None:
    from engine.workdir import Workdir

    spec_path = write_spec(tiny_spec(demo_model, SAMPLE), tmp_path / "spec.json")
    Workdir(tmp_path / "work").request_cancel("budget: monthly budget reached")
    result = run_engine(spec_path, tmp_path / "work")
    assert result.returncode == 0
    items = events(tmp_path / "work")
    assert items[-1]["stage"] == "cancelled" and "monthly budget" in items[-1]["message"]


def test_a_different_spec_in_the_same_workdir_is_refused(reference_run: Path, demo_model: Path, tmp_path: Path) -> None:
    before = (reference_run / "events.jsonl").read_bytes()
    other = write_spec(tiny_spec(demo_model, SAMPLE, "lora_r=4"), tmp_path / "other.json")
    result = run_engine(other, reference_run)
    assert result.returncode == 2
    assert "different training spec" in result.stderr
    assert (reference_run / "events.jsonl").read_bytes() == before  # nothing written into another job's record


def test_an_invalid_spec_exits_2_with_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset": {"dataset_path": "x"}, "hyperparameters": {"lora_r": 0}}))
    result = run_engine(bad, tmp_path / "work")
    assert result.returncode == 2
    assert "lora_r" in result.stderr and "Traceback" not in result.stderr


def test_out_of_memory_is_classified_with_suggested_values(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import TrainerCallback

    from engine import training
    from engine.runner import Job
    from engine.workdir import Workdir

    class RaiseOOM(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.global_step == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    original = training.build_trainer

    def build_with_oom(*args: Any, **kwargs: Any) -> Any:
        trainer, cancel = original(*args, **kwargs)
        trainer.add_callback(RaiseOOM())
        return trainer, cancel

    monkeypatch.setattr(training, "build_trainer", build_with_oom)
    spec = tiny_spec(demo_model, SAMPLE, "batch_size=4", "gradient_accumulation_steps=2")
    workdir = Workdir(tmp_path / "work")
    workdir.root.mkdir()
    code = Job(spec, workdir, tmp_path / "models").run()
    assert code == 1
    items = events(workdir.root)
    (error,) = of_type(items, "error")
    assert error["category"] == "out_of_memory"
    assert error["suggested"] == {"batch_size": 2, "gradient_accumulation_steps": 4, "activation_checkpointing": True}
    assert "halve batch_size" in error["hint"] and "Traceback" in error["traceback"]
    assert items[-1]["type"] == "stage" and items[-1]["stage"] == "failed"


def test_qlora_4bit_trains_on_cpu(demo_model: Path, tmp_path: Path) -> None:
    spec = tiny_spec(demo_model, SAMPLE, "load_in_4bit=true", "bf16=true", "num_epochs=1", "eval_generations=1")
    result = run_engine(write_spec(spec, tmp_path / "spec.json"), tmp_path / "work")
    assert result.returncode == 0, result.stderr[-3000:]
    items = events(tmp_path / "work")
    assert stages(items)[-1] == "completed"
    assert all(math.isfinite(loss) for loss in step_losses(items).values())
    log_text = (tmp_path / "work" / "logs" / "engine.log").read_text()
    assert "4-bit nf4" in log_text


def test_packed_sequences_do_not_see_each_other(demo_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo_model)
    model.eval()
    vocab = model.config.vocab_size
    a = torch.randint(10, vocab, (1, 40))
    b = torch.randint(10, vocab, (1, 30))
    with torch.no_grad():
        alone = model(input_ids=a, use_cache=False).logits
        packed = model(
            input_ids=torch.cat([a, b], dim=1),
            position_ids=torch.cat([torch.arange(40), torch.arange(30)]).unsqueeze(0),
            use_cache=False,
        ).logits
        second_alone = model(input_ids=b, use_cache=False).logits
    assert torch.allclose(packed[:, :40], alone, atol=1e-5)
    assert torch.allclose(packed[:, 40:], second_alone, atol=1e-5)


def test_webhook_signatures_are_hmac_of_the_body() -> None:
    from engine.webhooks import verify_signature

    body = json.dumps({"timestamp": "2027-01-15T08:00:00+00:00", "status": "training"}).encode()
    signature = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    now = 1_800_000_000 + 10  # 2027-01-15T08:00:10Z
    assert verify_signature(body, signature, "s3cret", now=now)
    assert not verify_signature(body + b" ", signature, "s3cret", now=now)
    assert not verify_signature(body, signature, "s3cret", now=now + 3600)  # a stale replay


def test_a_second_sigterm_racing_a_cancel_request_still_ends_in_one_checkpoint(
    demo_model: Path, tmp_path: Path
) -> None:
    """A second cancel, or a signal after the control file was read, once exited hard with no checkpoint."""
    from engine.workdir import Workdir

    spec_path = write_spec(tiny_spec(demo_model, SAMPLE), tmp_path / "spec.json")
    workdir = tmp_path / "work"
    process = start_engine(spec_path, workdir)
    wait_for(lambda: max(step_losses(events(workdir)) or [0]) >= 2, timeout=120)
    Workdir(workdir).request_cancel("cancelled by the user")
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    items = events(workdir)
    assert stages(items)[-1] == "cancelled" and items[-1]["message"] == "cancelled by the user"
    assert [e["reason"] for e in of_type(items, "checkpoint")].count("cancel") == 1


def test_nothing_follows_the_last_word(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat once went on after the terminal stage event: a cost event could follow it."""
    import time

    from engine import runner
    from engine.events import Stage
    from engine.workdir import Workdir

    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.01)
    monkeypatch.setenv("LORAPOD_RATE_USD_PER_HOUR", "36")
    spec = tiny_spec(tmp_path, SAMPLE)
    job = runner.Job(spec, Workdir(tmp_path / "work"), tmp_path)
    job._heartbeat_thread = threading.Thread(target=job._heartbeat, daemon=True)
    job._heartbeat_thread.start()
    time.sleep(0.1)
    job.finish(Stage.COMPLETED, "done")
    time.sleep(0.2)
    items = events(tmp_path / "work")
    assert items[-1]["type"] == "stage" and items[-1]["stage"] == "completed"
    assert items[-2]["type"] == "cost" and items[-2]["elapsed"] > 0
    job.writer.close()


LONG_PREPARE = """
# Preparing takes minutes, a stand-in for a model download: the engine must not wait it out past a limit.
import time
import engine.prepare as prepare

_prepare = prepare.prepare

def slow(*args, **kwargs):
    time.sleep(600)
    return _prepare(*args, **kwargs)

prepare.prepare = slow
"""


def test_a_limit_crossed_in_a_long_stage_stops_it_without_waiting_for_its_end(demo_model: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(LONG_PREPARE)
    spec_path = write_spec(tiny_spec(demo_model, SAMPLE), tmp_path / "spec.json")
    limits = '{"ceiling_usd": 3.0, "ceiling_name": "the job\'s max_cost_usd"}'
    result = run_engine(
        spec_path, tmp_path / "work", timeout=120, LORAPOD_RATE_USD_PER_HOUR="3600", LORAPOD_LIMITS=limits,
        PYTHONPATH=str(hooks),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    items = events(tmp_path / "work")
    assert items[-1]["stage"] == "cancelled" and items[-1]["limit"] == "cost"
    assert "max_cost_usd" in items[-1]["message"]
    assert of_type(items, "cost")[-1]["elapsed"] < 30  # not the 600 s the stage would have taken


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("CUDA out of memory. Tried to allocate 2.00 GiB", "CUDA out of memory. Tried to allocate 2.00 GiB"),
        ("", "out of memory (OutOfMemoryError)"),
    ],
)
def test_an_out_of_memory_message_says_it_once(error: str, message: str) -> None:
    import torch

    from engine.failures import classify

    failure = classify(torch.OutOfMemoryError(error), None)
    assert (failure.category, failure.message) == ("out_of_memory", message)


def test_a_python_memory_error_is_out_of_memory() -> None:
    from engine.failures import classify

    failure = classify(MemoryError(), None)
    assert (failure.category, failure.message) == ("out_of_memory", "out of memory (MemoryError)")
