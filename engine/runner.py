"""``python -m engine run``: one job, start to finish, every stage announced as an event.

prepare → load → train → evaluate → package → upload (to the artifact store the environment names, if
any), then completed; or failed (classified, with a hint) or cancelled (after a checkpoint). The workdir is
the job's whole record: restarting the engine on it resumes from the newest checkpoint of the same spec, and
refuses a different one. With ``gpu_count`` above one, this command launches the job's ranks (engine.distributed)
and each of them runs the same stages; rank 0 alone writes the record.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from engine import SpecError, distributed
from engine.config import JobSpec
from engine.events import (
    ArtifactEvent,
    CostEvent,
    DatasetEvent,
    ErrorEvent,
    EventWriter,
    HeartbeatEvent,
    LogEvent,
    Stage,
    StageEvent,
)
from engine.failures import JobCancelled, SpecMismatch, classify
from engine.limits import Limits, process_elapsed
from engine.startup import already_finished, check_same_training, load_spec, setup_logging
from engine.workdir import Workdir

log = logging.getLogger("engine")
HEARTBEAT_SECONDS = float(os.environ.get("LORAPOD_HEARTBEAT_S", "30"))
# Delivered to the engine's own main thread (never sent from outside) to stop a stage between two steps.
INTERRUPT_SIGNAL = signal.SIGUSR1
# Environment variables the engine reads; their values never reach a log, an event or a package.
SECRET_ENV = (
    "HF_TOKEN", "TRAINING_WEBHOOK_SECRET", "LORAPOD_POD_TOKEN", "RUNPOD_API_KEY", "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
)  # fmt: skip


class Job:
    """One run of the engine over one workdir."""

    def __init__(self, spec: JobSpec, workdir: Workdir, models_dir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.models_dir = models_dir
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        # Rank 0 alone keeps the record; the other ranks' events go nowhere.
        self.writer = EventWriter(workdir.events, spec.job_id or "") if self.rank == 0 else None
        self.stage: Stage | None = None
        self.cancel_reason: str | None = None
        self.progress: Any = None  # the trainer's Progress once training starts
        self._stop_heartbeat = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self.webhooks: Any = None
        self.finished = False  # set once the terminal stage event is written: nothing may follow it
        self.limits = Limits.from_env()
        self.limit_kind: str | None = None  # "cost" or "duration" once a limit stopped the job
        self._interrupted_at = -float("inf")  # when the main thread was last told to stop its stage

    # --- events -----------------------------------------------------------------------------------------

    def emit(self, event: Any) -> Any:
        if self.writer is None:
            return event
        stamped = self.writer.emit(event)
        if self.webhooks is not None:
            self.webhooks.on_event(stamped)
        return stamped

    def enter(self, stage: Stage, message: str | None = None, **extra: Any) -> None:
        self.check_cancel()
        self.stage = stage
        log.info("stage: %s%s", stage, f" — {message}" if message else "")
        self.emit(StageEvent(stage=stage, message=message, **extra))

    def finish(self, stage: Stage, message: str, *, limit: str | None = None) -> None:
        """Write the terminal stage event: the job's last word, after the cost it ran up (the heartbeat is
        stopped first, so no heartbeat or cost event can follow it)."""
        self._stop_heartbeat.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join()
        if self.limits.rate_usd_per_hour > 0:
            self._emit_cost(process_elapsed())
        self.stage = stage
        if self.rank == 0:
            log.info("stage: %s — %s", stage, message)
        else:
            log.info("rank %d ends: %s (rank 0 records the job)", self.rank, stage)
        self.emit(StageEvent(stage=stage, message=message, limit=limit))
        self.finished = True

    def _webhook_warning(self, event: Any) -> None:
        # After the terminal event the record is closed; a late delivery failure goes to the log only.
        if self.finished or self.writer is None:
            log.warning("%s", getattr(event, "message", event))
        else:
            self.writer.emit(event)

    def info(self, message: str) -> None:
        log.info("%s", message)
        self.emit(LogEvent(message=message))

    # --- cancel -----------------------------------------------------------------------------------------

    def should_stop(self) -> str | None:
        """Why the job must stop (a cancel request, or a limit it reached), checked at every step."""
        if self.cancel_reason is None:
            requested = self.workdir.cancel_requested() or self._limit_reached()
            if requested:
                self.cancel_reason = requested
        return self.cancel_reason

    def _limit_reached(self) -> str | None:
        reached = self.limits.crossed(process_elapsed())
        if reached is None:
            return None
        self.limit_kind = reached.kind
        log.warning("%s: finishing the current step, then checkpointing and stopping", reached.reason)
        return reached.reason

    def check_cancel(self) -> None:
        reason = self.should_stop()
        if reason:
            raise JobCancelled(reason)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.world_size > 1:
            # A rank is signalled by its launcher only, when another rank died: this one ends with no terminal
            # event (cancels reach the ranks through the control file, which the launcher writes).
            raise distributed.RankStopped(f"{signal.Signals(signum).name} from the launcher")
        # Every cancel ends in one checkpoint and ``cancelled``: a second signal (a second cancel, a limit stop
        # then the user's, a signal racing the control file) changes nothing. SIGKILL is the hard stop.
        if self.cancel_reason is not None:
            log.info("%s received while already stopping (%s)", signal.Signals(signum).name, self.cancel_reason)
            return
        # A supervisor writes its reason (a budget limit, the user) before it signals.
        self.cancel_reason = self.workdir.cancel_requested() or f"{signal.Signals(signum).name} received"
        log.warning("%s: finishing the current step, then checkpointing and stopping", self.cancel_reason)

    def _emit_cost(self, elapsed: float) -> None:
        cost = round(self.limits.cost(elapsed), 6)
        self.emit(CostEvent(rate_usd_per_hour=self.limits.rate_usd_per_hour, cost_usd=cost, elapsed=round(elapsed, 3)))

    def _interrupt_stage(self) -> None:
        """Stop a stage that has no step to finish (a model download, loading, evaluation) as soon as its main
        thread runs Python again; training stops at its next step, with a checkpoint, by itself."""
        if self.stage in (Stage.TRAINING, None) or self.finished:
            return
        # Again every 10 s: library code that catches every exception may have swallowed the last one.
        self._interrupted_at = time.monotonic()
        main = threading.main_thread().ident
        if main is not None:  # a real signal: it also wakes a main thread blocked in a read or a sleep
            signal.pthread_kill(main, INTERRUPT_SIGNAL)

    def _on_interrupt(self, _signum: int, _frame: FrameType | None) -> None:
        if self.cancel_reason is not None and self.stage is not Stage.TRAINING and not self.finished:
            raise JobCancelled(self.cancel_reason)

    def _heartbeat(self) -> None:
        """Heartbeats and cost every HEARTBEAT_SECONDS, and the limits checked between training steps too
        (a model download can outlast a budget)."""
        interval = min(HEARTBEAT_SECONDS, 1.0)
        last_beat = time.monotonic()
        while not self._stop_heartbeat.wait(interval):
            if self.should_stop() and time.monotonic() - self._interrupted_at > 10:
                self._interrupt_stage()
            if time.monotonic() - last_beat < HEARTBEAT_SECONDS:
                continue
            last_beat = time.monotonic()
            elapsed = process_elapsed()
            step = self.progress.step if self.progress is not None else None
            self.emit(HeartbeatEvent(stage=self.stage, step=step, elapsed=round(elapsed, 1)))
            if self.limits.rate_usd_per_hour > 0:
                self._emit_cost(elapsed)

    # --- the job ----------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run the job; 0 when completed or cancelled, else the failure's exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(INTERRUPT_SIGNAL, self._on_interrupt)
        pid_file = self.workdir.pid_file if self.world_size == 1 else self.workdir.rank_pid(self.rank)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(os.getpid()))
        beat = self._heartbeat_thread = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        try:
            if self.spec.webhook_url and self.rank == 0:  # webhooks follow the record, which rank 0 keeps
                from engine.webhooks import WebhookSender

                secret = os.environ.get("TRAINING_WEBHOOK_SECRET") or None
                self.webhooks = WebhookSender(
                    self.spec.webhook_url, secret, warn=self._webhook_warning, signature=self.spec.webhook_signature
                )
            self._adopt_workdir()
            self._pipeline()
            self.finish(Stage.COMPLETED, "the job finished; its packages are ready")
            return 0
        except JobCancelled as cancelled:
            self.finish(Stage.CANCELLED, str(cancelled), limit=self.limit_kind)
            return 0
        except BaseException as exc:  # every failure becomes an error event and a non-zero exit
            if self.world_size > 1 and distributed.is_peer_failure(exc):
                # Another rank is gone: no terminal event, so the job reads as interrupted and a restart resumes it.
                log.error("rank %d stopped: another rank ended (%s); restart the job to resume it", self.rank, exc)
                return distributed.PEER_LOST_EXIT
            failure = classify(exc, self.spec)
            log.error("failed (%s): %s\n%s", failure.category, failure.message, failure.traceback or "")
            self.emit(
                ErrorEvent(
                    category=failure.category,
                    message=failure.message,
                    hint=failure.hint,
                    traceback=failure.traceback,
                    suggested=failure.suggested,
                )
            )
            self.finish(Stage.FAILED, f"{failure.category}: {failure.message}")
            return failure.exit_code
        finally:
            self._stop_heartbeat.set()
            beat.join()
            if self.webhooks is not None:
                self.webhooks.close(timeout=15)
            # The handlers stay: a signal while the process winds down changes nothing (the default would kill
            # it with its record already closed, and exit code -15 would say it failed).
            pid_file.unlink(missing_ok=True)
            if self.writer is not None:
                self.writer.close()

    def _adopt_workdir(self) -> None:
        """Record the spec the job runs (a restart has already been checked to bring the same one)."""
        if self.rank != 0:  # rank 0 alone writes the record: two ranks renaming one file race each other
            return
        tmp = self.workdir.spec.with_suffix(".tmp")
        tmp.write_text(self.spec.model_dump_json(indent=2), encoding="utf-8")
        tmp.replace(self.workdir.spec)

    def _pipeline(self) -> None:
        from engine.model import load_tokenizer, resolve_base_model

        spec, workdir = self.spec, self.workdir
        token = os.environ.get("HF_TOKEN") or None
        self.enter(Stage.PREPROCESSING)
        from engine.model import device
        from engine.speed import check_machine, describe

        cuda = device() == "cuda"
        check_machine(spec.hyperparameters, cuda=cuda)  # before anything slow: a refused setting fails at once
        self.info(describe(spec.hyperparameters, cuda=cuda))
        parallelism, why = self._parallelism(cuda)  # likewise: a mode this machine cannot run fails here
        distributed.init(use_cpu=not cuda)
        model_path = resolve_base_model(spec.base_model, self.models_dir)
        tokenizer = load_tokenizer(model_path, token)
        from engine.prepare import prepare

        # Rank 0 converts the dataset into the workdir; the others read what it wrote.
        if self.rank == 0:
            prepared = prepare(spec, workdir, tokenizer, world_size=self.world_size)
        distributed.barrier()
        if self.rank != 0:
            prepared = prepare(spec, workdir, tokenizer, world_size=self.world_size, convert=False)
        self._report_dataset(prepared.stats)
        from engine.training import Progress, build_trainer, warn_if_few_steps

        warn_if_few_steps(spec, prepared.stats["steps_per_epoch"], self.emit)

        self.enter(Stage.MODEL_LOADING, spec.base_model)
        from engine.model import load_model

        model = load_model(spec, model_path, token)
        use_cpu = not cuda

        self.enter(
            Stage.TRAINING,
            f"{self.world_size} ranks, {parallelism}: {why}" if parallelism else None,
            world_size=self.world_size,
            parallelism=parallelism,
        )
        self.progress = Progress()
        trainer, cancel = build_trainer(
            spec, workdir, model, tokenizer, prepared.train, prepared.evaluation,
            emit=self.emit, progress=self.progress, should_stop=self.should_stop, use_cpu=use_cpu,
        )  # fmt: skip
        checkpoint = workdir.newest_checkpoint()
        if checkpoint is not None:
            self.info(f"resuming from {checkpoint.name} (same spec {spec.training_hash()[:12]}…)")
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if self.world_size > 1:
            log.info("rank %d trained as %s", self.rank, type(trainer.model_wrapped).__name__)
        if cancel.stopped:
            raise JobCancelled(cancel.stopped)
        if self.rank != 0:
            log.info("rank %d trained its share; rank 0 evaluates and packages", self.rank)
            return
        best = self._save_adapter(model, tokenizer, trainer.state)

        self.enter(Stage.EVALUATING, f"{len(prepared.eval_items)} held-out examples")
        evaluation = self._evaluate(model, tokenizer, prepared, use_cpu, best)

        self.enter(Stage.PACKAGING)
        from engine.packaging import build_packages

        packages = build_packages(spec, workdir, evaluation, prepared.system_prompt)
        for package in packages:
            path, size, digest = str(package.path), package.size_bytes, package.sha256
            self.emit(ArtifactEvent(kind=package.kind, path=path, size_bytes=size, sha256=digest))

        self.enter(Stage.UPLOADING)
        self.upload(packages)

    def _parallelism(self, cuda: bool) -> tuple[str | None, str]:
        from engine.training import parallelism_choice

        return parallelism_choice(self.spec, self.world_size, cuda=cuda)

    def upload(self, packages: list[Any]) -> None:
        """Copy the packages to the artifact store the environment names; each lands as an artifact event
        with its URI. A resumed job uploads again: what is already there, unchanged, is not sent twice."""
        from engine.artifacts import storage_path, store_from_env

        store = store_from_env(state_dir=self.workdir.root / "uploads")
        if store is None:
            self.info("no artifact store configured: the packages stay in the workdir")
            return
        for package in packages:
            self.check_cancel()
            stored = store.upload(package.path, self.spec.job_id or "", sha256=package.sha256)
            self.emit(
                ArtifactEvent(
                    kind=package.kind, path=str(package.path), size_bytes=stored.size_bytes, sha256=stored.sha256,
                    uri=stored.uri,
                )
            )  # fmt: skip
            self.info(f"{package.kind} package stored: {storage_path(stored.uri)}")

    def _report_dataset(self, stats: dict[str, Any]) -> None:
        from engine.dataset.convert import describe_repairs

        self.emit(DatasetEvent(**stats))
        for line in describe_repairs(stats["repairs"]):
            self.info(line)

    def _save_adapter(self, model: Any, tokenizer: Any, state: Any) -> dict[str, Any] | None:
        """The adapter the trainer trained (this very object), at its best checkpoint, saved into the workdir."""
        best = self._choose_checkpoint(model, state)
        model.save_pretrained(str(self.workdir.adapter))
        tokenizer.save_pretrained(self.workdir.adapter)
        return best

    def _choose_checkpoint(self, model: Any, state: Any) -> dict[str, Any] | None:
        """The checkpoint with the lowest held-out loss, its adapter weights put into ``model``; None without
        periodic evaluations (no held-out split)."""
        from engine.selection import best_checkpoint, load_adapter_weights

        best = best_checkpoint(state.log_history, self.workdir.checkpoints)
        if best is None:
            return None
        if best.step != state.global_step:
            load_adapter_weights(model, best.path)
            self.info(f"packaging checkpoint-{best.step}: its eval loss {best.eval_loss:.4f} is the lowest")
        return best.to_dict()

    def _evaluate(
        self, model: Any, tokenizer: Any, prepared: Any, use_cpu: bool, best: dict[str, Any] | None
    ) -> dict[str, Any]:
        from engine.evaluate_stage import run_evaluation

        return run_evaluation(self, model, tokenizer, prepared, use_cpu, best)


def main(spec_path: Path | None, workdir_path: Path, *, models_dir: Path | None = None) -> int:
    """Run the job in ``workdir_path``; the exit code says how it ended (0 completed/cancelled, 1 failed, 2 spec)."""
    if distributed.is_rank_process():
        # Orphaned, a rank would train on unwatched and hold its GPU: it ends with torch's agent, hard, as the
        # agent would have ended it (the agent itself ends with the launcher).
        distributed.die_with_parent(signal.SIGKILL)
    workdir = Workdir(workdir_path.absolute())
    workdir.root.mkdir(parents=True, exist_ok=True)
    setup_logging(workdir)
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        log.error("%s", exc)
        return 2
    if spec.job_id is None:  # run by hand: keep the id a previous start of this workdir chose
        previous = json.loads(workdir.spec.read_text(encoding="utf-8")).get("job_id") if workdir.spec.exists() else None
        spec = spec.model_copy(update={"job_id": previous or str(uuid.uuid4())})
    try:
        check_same_training(spec, workdir)
    except SpecMismatch as exc:  # the workdir's record belongs to that other job: write nothing into it
        log.error("%s", exc)
        return 2
    if already_finished(workdir):
        log.info("job %s already completed in %s; nothing to do", spec.job_id, workdir.root)
        return 0
    ranks = spec.resources.gpu_count
    if ranks > 1 and not distributed.is_rank_process():
        return distributed.launch(spec.model_dump_json(), workdir, models_dir, ranks)
    return Job(spec, workdir, models_dir or workdir.root / "models").run()
