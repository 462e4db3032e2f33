"""What was measured of a job on this machine after it ended: an endpoint judge's verdicts (`lorapod judge`),
kept beside the ledger, and the ledger's human ratings; laid over the evaluation the job itself wrote.

A RunPod job's eval.json stays in its package, so the judge run from here is kept in ``judgements/<job>.json``
next to the ledger; ``show``, ``compare`` and the client report then find it for any job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.targets import check_targets
from store.db import Ledger
from store.errors import StoreError
from store.ratings import human_summary


def judgement_path(ledger: Ledger, job_id: uuid.UUID) -> Path:
    return ledger.path.parent / "judgements" / f"{job_id}.json"


def save_judgement(ledger: Ledger, job_id: uuid.UUID, result: Mapping[str, Any]) -> Path:
    """Keep the judge's result of ``job_id`` (its raw records included); the file written."""
    path = judgement_path(ledger, job_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(result), indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise StoreError(f"cannot keep the judge's result in {path}: {exc.strerror or exc}") from exc
    return path


def load_judgement(ledger: Ledger, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The judge's result kept for ``job_id`` on this machine, or None."""
    try:
        data = json.loads(judgement_path(ledger, job_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def with_local_results(ledger: Ledger, job_id: uuid.UUID, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluation`` with what this machine measured since: the judge run from here (when the job's own
    evaluation has none) and the ledger's human ratings; its targets checked again over all of it."""
    merged = dict(evaluation)
    if not merged.get("judge"):
        judgement = load_judgement(ledger, job_id)
        if judgement is not None:
            merged["judge"] = {k: v for k, v in judgement.items() if k != "records"}
    human = human_summary(ledger, job_id)
    if human is not None:
        merged["human"] = human
    if merged:
        merged["targets"] = check_targets(merged)
    return merged
