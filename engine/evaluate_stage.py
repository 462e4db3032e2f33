"""The evaluate stage: held-out perplexity, both models' replies, the judge, the forgetting check and the targets,
written to eval.json and announced as one eval event."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from engine.events import EvalEvent, WarningEvent
from engine.retention import RETENTION_TARGET

if TYPE_CHECKING:
    from engine.runner import Job


def run_evaluation(
    job: Job, model: Any, tokenizer: Any, prepared: Any, use_cpu: bool, best: dict[str, Any] | None
) -> dict[str, Any]:
    """Evaluate the packaged adapter (the ``best`` checkpoint's weights) against its base on the held-out split."""
    from engine.evaluation import evaluate
    from engine.targets import check_targets

    hp = job.spec.hyperparameters
    if not prepared.eval_items:
        job.info("no held-out split (eval_fraction is 0 or there is one conversation): evaluation skipped")
        result: dict[str, Any] = {"examples": 0, "skipped": "no held-out split"}
    else:
        judging = hp.judge == "base" and bool(hp.judge_criteria)
        if hp.judge == "endpoint":
            job.info(f"judge: {hp.judge_model} at {hp.judge_url} judges from your machine: `lorapod judge JOB`")
        elif hp.judge == "base" and not judging:
            job.info("judge skipped: the spec has no judge_criteria (a spec built by lorapod fills them in)")
        result = evaluate(
            model, tokenizer, prepared.eval_items, "cpu" if use_cpu else "cuda",
            generations=hp.eval_generations, max_new_tokens=hp.max_new_tokens, max_prompts=hp.eval_max_prompts,
            batch_size=hp.eval_batch_size, judge_criteria=hp.judge_criteria if judging else None,
            stop=lambda: job.should_stop() is not None,
        )  # fmt: skip
        if result.get("bounded"):
            job.info(
                f"eval_max_prompts={hp.eval_max_prompts}: {len(result['replies'])} of "
                f"{result['held_out_prompts']} held-out prompts answered{' and judged' if judging else ''}"
            )
    if hp.retention:
        result["retention"] = _retention(job, model, tokenizer, "cpu" if use_cpu else "cuda")
    job.check_cancel()
    result["best_checkpoint"] = best
    result["targets"] = check_targets(result)
    job.workdir.eval_file.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    job.emit(
        EvalEvent(
            base_perplexity=result.get("base_perplexity"),
            adapter_perplexity=result.get("adapter_perplexity"),
            eval_loss=result.get("eval_loss"),
            tokens=result.get("tokens", 0),
            groups=result.get("groups", {}),
            generations=result.get("generations", []),
            replies=result.get("replies", []),
            held_out_prompts=result.get("held_out_prompts"),
            judge={k: v for k, v in result["judge"].items() if k != "records"} if result.get("judge") else None,
            retention=result.get("retention"),
            best_checkpoint=best,
            targets=result["targets"],
        )
    )
    return result


def _retention(job: Job, model: Any, tokenizer: Any, device: str) -> dict[str, Any]:
    """The forgetting check; a task that cannot run (not installed, not downloadable) is a warning, not a
    failed job: the adapter trained all the same."""
    from engine.retention import RetentionError, retention_check

    hp = job.spec.hyperparameters
    job.info(f"forgetting check: {', '.join(hp.retention_tasks)} (base vs adapter)")
    try:
        return retention_check(
            model, tokenizer, hp.retention_tasks, limit=hp.retention_limit, batch_size=hp.eval_batch_size,
            device=device,
        )  # fmt: skip
    except RetentionError as exc:
        job.emit(WarningEvent(code="retention_skipped", message=f"forgetting check skipped: {exc}"))
        return {"error": str(exc), "tasks": {}, "retained": None, "target": RETENTION_TARGET}
