"""The ledger side of supervision: ingest, leases, attempts and alerts."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import presets
from store.alerts import acknowledge, list_alerts, raise_alert
from store.artifacts import list_artifacts
from store.attempts import accrue, list_attempts, start_attempt
from store.db import Ledger
from store.ingest import ingest
from store.jobs import acquire_lease, create_job, get_job, release_lease, transition
from store.metrics import metrics_history
from store.status import JobStatus

TS = "2026-11-22T10:00:00+00:00"


def _job(ledger: Ledger):  # type: ignore[no-untyped-def]
    job = create_job(ledger, presets.get("smoke").to_spec("d.json"))
    transition(ledger, job.id, JobStatus.PROVISIONING)
    return job


def _events() -> list[dict[str, object]]:
    return [
        {"seq": 1, "ts": TS, "type": "stage", "stage": "preprocessing"},
        {
            "seq": 2,
            "ts": TS,
            "type": "dataset",
            "total_steps": 20,
            "examples": 5,
            "train_examples": 4,
            "eval_examples": 1,
            "tokens": 900,
            "supervised_tokens": 600,
            "packed_sequences": 4,
            "steps_per_epoch": 10,
            "epochs": 2,
        },
        {"seq": 3, "ts": TS, "type": "stage", "stage": "model_loading"},
        {"seq": 4, "ts": TS, "type": "stage", "stage": "training"},
        {
            "seq": 5,
            "ts": TS,
            "type": "metrics",
            "step": 10,
            "total_steps": 20,
            "epoch": 1.0,
            "loss": 2.0,
            "eta": 30,
            "elapsed": 30.0,
        },
        {
            "seq": 6,
            "ts": TS,
            "type": "metrics",
            "step": 10,
            "total_steps": 20,
            "epoch": 1.0,
            "eval_loss": 2.5,
            "elapsed": 31.0,
        },
        {"seq": 7, "ts": TS, "type": "stage", "stage": "evaluating"},
        {
            "seq": 8,
            "ts": TS,
            "type": "eval",
            "base_perplexity": 9.0,
            "adapter_perplexity": 7.0,
            "eval_loss": 1.9,
            "tokens": 300,
        },
        {"seq": 9, "ts": TS, "type": "stage", "stage": "packaging"},
        {
            "seq": 10,
            "ts": TS,
            "type": "artifact",
            "kind": "adapter",
            "path": "/w/p/a.zip",
            "size_bytes": 9,
            "sha256": "ab",
        },
        {"seq": 11, "ts": TS, "type": "stage", "stage": "uploading"},
        {"seq": 12, "ts": TS, "type": "stage", "stage": "completed"},
    ]


def test_ingest_applies_events_once_and_moves_the_status(ledger: Ledger) -> None:
    job = _job(ledger)
    first = ingest(ledger, job.id, _events()[:6])
    assert (first.new_events, first.status, first.terminal) == (6, "training", False)
    stored = get_job(ledger, job.id)
    assert (stored.current_step, stored.total_steps, stored.current_epoch) == (10, 20, 1.0)
    assert stored.estimated_completion_at is not None
    again = ingest(ledger, job.id, _events())  # overlaps the first batch
    assert again.new_events == 6 and again.terminal and again.status == "completed"
    assert ingest(ledger, job.id, _events()).new_events == 0
    done = get_job(ledger, job.id)
    assert (done.status, done.stage, done.last_event_seq) == ("completed", "completed", 12)
    assert done.lora_artifact_path == "/w/p/a.zip"
    (row,) = metrics_history(ledger, job.id)
    assert (row.loss, row.eval_loss) == (2.0, 2.5)
    (artifact,) = list_artifacts(ledger, job.id)
    assert (artifact.perplexity, artifact.validation_loss, artifact.lora_config["lora_r"]) == (7.0, 1.9, 8)


def test_ingest_records_a_failure_and_its_hint(ledger: Ledger) -> None:
    job = _job(ledger)
    events = [
        *_events()[:4],
        {"seq": 5, "ts": TS, "type": "error", "category": "out_of_memory", "message": "OOM", "hint": "halve"},
        {"seq": 6, "ts": TS, "type": "stage", "stage": "failed", "message": "out_of_memory: OOM"},
        {"seq": 7, "ts": TS, "type": "stage", "stage": "training"},  # nothing moves a finished job
    ]
    result = ingest(ledger, job.id, events)
    assert result.status == "failed" and result.skipped_transitions
    stored = get_job(ledger, job.id)
    assert (stored.error_category, stored.error_message, stored.error_hint) == ("out_of_memory", "OOM", "halve")


def test_one_lease_holder_at_a_time_and_takeover_after_expiry(ledger: Ledger) -> None:
    job = _job(ledger)
    assert acquire_lease(ledger, job.id, "a", ttl_seconds=30)
    assert not acquire_lease(ledger, job.id, "b", ttl_seconds=30)
    assert acquire_lease(ledger, job.id, "a", ttl_seconds=30)  # renewal
    release_lease(ledger, job.id, "a")
    assert acquire_lease(ledger, job.id, "b", ttl_seconds=0.0)
    assert acquire_lease(ledger, job.id, "c", ttl_seconds=30)  # b's lease had expired


def test_attempt_costs_add_up_on_the_job(ledger: Ledger) -> None:
    job = _job(ledger)
    first = start_attempt(ledger, job.id, provider="runpod", handle={}, rate_usd_per_hour=2.0, gpu_count=1)
    accrue(ledger, first.id or 0, now=first.started_at + timedelta(hours=1), outcome="interrupted")
    second = start_attempt(ledger, job.id, provider="runpod", handle={}, rate_usd_per_hour=3.0, gpu_count=2)
    attempt_cost, total = accrue(ledger, second.id or 0, now=second.started_at + timedelta(minutes=30))
    assert (attempt_cost, total) == (1.5, 3.5)
    stored = get_job(ledger, job.id)
    assert stored.actual_cost_usd == 3.5
    assert [a.number for a in list_attempts(ledger, job.id)] == [1, 2]
    assert abs(stored.gpu_hours - 2.0) < 0.01  # 1 h × 1 GPU + 0.5 h × 2 GPUs


def test_alerts_are_raised_once_per_key(ledger: Ledger) -> None:
    assert raise_alert(ledger, "budget:2026-11:0.8", "budget", "past 80%")
    assert not raise_alert(ledger, "budget:2026-11:0.8", "budget", "past 80% again")
    (alert,) = list_alerts(ledger)
    acknowledge(ledger, [alert.id or 0])
    assert list_alerts(ledger) == [] and len(list_alerts(ledger, unacknowledged=False)) == 1


def test_auto_resume_keeps_the_rules_of_a_start(ledger: Ledger, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Auto-resume once skipped the per-job ceiling: a job that had already cost it was started again."""
    from remote.supervisor import Supervisor
    from store.jobs import update_job
    from store.settings import load_settings

    monkeypatch.setenv("LORAPOD_AUTO_RESUME", "true")
    monkeypatch.setenv("LORAPOD_PER_JOB_CEILING_USD", "50")
    launched: list[object] = []
    supervisor = Supervisor(ledger, load_settings())

    def launch(job_id: object, resume: bool = False) -> SimpleNamespace:
        launched.append(job_id)
        return SimpleNamespace(number=2)

    monkeypatch.setattr(supervisor, "launch", launch)
    job = _job(ledger)
    transition(ledger, job.id, JobStatus.INTERRUPTED)
    update_job(ledger, job.id, actual_cost_usd=55.0, estimated_cost_usd=60.0)
    assert supervisor.auto_resume(job.id, 1) is None and launched == []
    assert any("per-job ceiling" in alert.message for alert in list_alerts(ledger))
    update_job(ledger, job.id, actual_cost_usd=5.0, estimated_cost_usd=20.0)
    supervisor.auto_resume(job.id, 1)
    assert launched == [job.id]
    assert supervisor.auto_resume(job.id, 3) is None and launched == [job.id]  # max_resume_attempts (3) reached


def test_a_malformed_event_is_kept_as_a_warning_that_says_why_and_changes_nothing(ledger: Ledger) -> None:
    from store.events import list_events

    job = _job(ledger)
    events = [
        *_events()[:4],
        {"seq": 5, "ts": TS, "type": "metrics", "step": "ten", "total_steps": 20, "epoch": 1.0, "elapsed": 3.0},
        {"seq": 6, "ts": TS, "type": "stage", "stage": "sleeping"},
        {"seq": 7, "ts": TS, "type": "from_a_newer_engine", "anything": 1},
    ]
    result = ingest(ledger, job.id, events)

    assert (result.new_events, result.last_seq, result.status) == (7, 7, "training")
    stored = get_job(ledger, job.id)
    assert stored.current_step == 0 and metrics_history(ledger, job.id) == []
    bad_metrics, bad_stage, unknown = list_events(ledger, job.id, after_seq=4)
    assert (bad_metrics.type, bad_metrics.payload["code"]) == ("warning", "malformed_event")
    assert bad_metrics.payload["message"].startswith("event 5 (metrics) does not match the engine's schema")
    assert "integer" in bad_metrics.payload["message"]  # what was wrong, in words
    assert bad_metrics.payload["details"]["event"]["step"] == "ten"  # what came, kept for whoever looks
    assert (bad_stage.type, bad_stage.payload["code"]) == ("warning", "malformed_event")
    assert (unknown.type, unknown.payload) == ("from_a_newer_engine", {"anything": 1})
