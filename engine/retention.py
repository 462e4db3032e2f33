"""The forgetting check: lm-evaluation-harness tasks scored by the base model and by the adapter, on the model
already in memory, and how much of the base's score the adapter keeps.

Each task's score is its accuracy (``acc``, else ``acc_norm``, else its first metric); ``retained`` is the
adapter's score over the base's, per task and overall (mean adapter score over mean base score), against
RETENTION_TARGET. A task is a name lm-evaluation-harness knows (its data downloads on first use) or the path
of a task YAML file, whose folder is searched for tasks too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import EngineError

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

RETENTION_TARGET = 0.95
_PREFERRED_METRICS = ("acc,none", "acc_norm,none")
log = logging.getLogger("engine")


class RetentionError(EngineError):
    """A forgetting check that cannot run: lm-evaluation-harness missing, or a task it cannot load."""


def task_names(tasks: Sequence[str]) -> tuple[list[str], list[str]]:
    """Task names to run and folders to search: a ``.yaml`` path stands for the task its ``task:`` line names."""
    names, folders = [], []
    for task in tasks:
        if not task.endswith((".yaml", ".yml")):
            names.append(task)
            continue
        path = Path(task).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RetentionError(f"retention_tasks: {task}: {exc.strerror or exc}") from None
        match = re.search(r"^task:\s*['\"]?([\w.-]+)", text, re.MULTILINE)
        if match is None:
            raise RetentionError(f"retention_tasks: {task}: no `task: NAME` line")
        names.append(match.group(1))
        folders.append(str(path.parent.resolve()))
    return names, folders


def score(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """The metric a task is scored by, and its value."""
    for name in _PREFERRED_METRICS:
        if isinstance(metrics.get(name), (int, float)):
            return name, float(metrics[name])
    for name, value in metrics.items():
        if "stderr" not in name and name != "alias" and isinstance(value, (int, float)):
            return name, float(value)
    return None


def _scores(lm: Any, model: PeftModel, names: list[str], manager: Any, *, adapter: bool, limit: int | None) -> dict:
    from lm_eval import simple_evaluate

    with nullcontext() if adapter else model.disable_adapter():
        results = simple_evaluate(
            model=lm, tasks=names, limit=limit, task_manager=manager, log_samples=False, bootstrap_iters=0,
            verbosity="WARNING",
        )  # fmt: skip
    if results is None:  # a rank other than 0 under accelerate; the engine evaluates on rank 0 alone
        raise RetentionError("lm-evaluation-harness returned no results")
    return dict(results["results"])


def retention_check(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    *,
    limit: int | None,
    batch_size: int,
    device: str,
) -> dict[str, Any]:
    """eval.json's ``retention``: {tasks: {name: {metric, base, adapter, retained}}, retained, target, limit}."""
    try:
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise RetentionError(f"lm-evaluation-harness is not installed ({exc}); install lorapod[train]") from None
    names, folders = task_names(tasks)
    try:
        # Indexing lm-evaluation-harness's thousands of built-in task files takes minutes on a small CPU: only
        # when a task is named rather than given as a file.
        builtin = len(folders) < len(names)
        manager = TaskManager(include_path=folders or None, include_defaults=builtin)
        unknown = [name for name in names if name not in manager.all_tasks]
        if unknown:
            raise RetentionError(f"retention_tasks: unknown task {', '.join(unknown)} (lm-evaluation-harness)")
        model.eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
        base = _scores(lm, model, names, manager, adapter=False, limit=limit)
        tuned = _scores(lm, model, names, manager, adapter=True, limit=limit)
    except RetentionError:
        raise
    except Exception as exc:  # a dataset that cannot download, a task config lm_eval refuses: not a failed job
        raise RetentionError(f"{type(exc).__name__}: {exc}") from exc
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        base_score, tuned_score = score(base.get(name, {})), score(tuned.get(name, {}))
        if base_score is None or tuned_score is None:
            raise RetentionError(f"{name}: lm-evaluation-harness reported no score")
        retained = tuned_score[1] / base_score[1] if base_score[1] else None
        report[name] = {"metric": base_score[0], "base": base_score[1], "adapter": tuned_score[1], "retained": retained}
    base_mean = sum(t["base"] for t in report.values()) / len(report)
    tuned_mean = sum(t["adapter"] for t in report.values()) / len(report)
    overall = tuned_mean / base_mean if base_mean else None
    log.info("forgetting check: the adapter keeps %s of the base's score", f"{overall:.1%}" if overall else "—")
    return {"tasks": report, "retained": overall, "target": RETENTION_TARGET, "limit": limit}
