"""The plain-line view of a followed job: each thing said once, in the order it happened."""

from __future__ import annotations

from typing import Any

from store.models import TrainingJob
from tui.cli.progress import JobView

ADAPTER = "/jobs/1/packages/1-adapter.zip"


def _view(*events: dict[str, Any]) -> JobView:
    view = JobView(job=TrainingJob(name="demo", status="running", base_model="demo:tiny-llama", preset="smoke"))
    for event in events:
        view._event(event)
    return view


def test_a_package_is_announced_once_and_its_stored_copy_by_where_it_went() -> None:
    view = _view(
        {"type": "stage", "stage": "packaging"},
        {"type": "artifact", "kind": "adapter", "path": ADAPTER, "size_bytes": 120_000, "sha256": "a" * 64},
        {"type": "stage", "stage": "uploading"},
        {
            "type": "artifact", "kind": "adapter", "path": ADAPTER, "size_bytes": 120_000, "sha256": "a" * 64,
            "uri": "file:///store/jobs/1/1-adapter.zip",
        },
        {"type": "log", "level": "info", "message": "adapter package stored: /store/jobs/1/1-adapter.zip"},
    )  # fmt: skip
    assert view.lines == [
        "stage: packaging",
        f"package adapter: {ADAPTER} (0.1 MB)",
        "stage: uploading",
        "adapter package stored: /store/jobs/1/1-adapter.zip",
    ]
