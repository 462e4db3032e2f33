"""Reading a dataset file: only regular files are opened, and a file that is not valid Unicode is refused in place."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import JobSpec
from engine.dataset import DatasetError
from engine.prepare import prepare
from engine.workdir import Workdir
from tests.dataset_helpers import SAMPLE

# What a runaway read may take before the test process stops it: far more than validating the sample needs.
_MEMORY_CAP = 2 << 30


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))


def lorapod(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``lorapod ARGS`` as a real process, capped in memory and time: a read that never ends fails the test."""
    command = [sys.executable, "-c", "from tui.cli import main; main()", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, preexec_fn=_cap_memory)


def _fifo(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "data.json"
    os.mkfifo(path)
    return path, "a FIFO"


def _link_to_dev_zero(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "data.json"
    path.symlink_to("/dev/zero")
    return path, "a character device"


@pytest.mark.parametrize("make", [_fifo, _link_to_dev_zero], ids=["fifo", "symlink to /dev/zero"])
@pytest.mark.parametrize("command", ["validate", "convert", "stats", "preview"])
def test_anything_but_a_regular_file_is_refused_by_name(tmp_path: Path, make: object, command: str) -> None:
    path, kind = make(tmp_path)  # type: ignore[operator]
    extra = ["-o", str(tmp_path / "out")] if command == "convert" else []
    result = lorapod("dataset", command, str(path), *extra)
    assert result.returncode == 1, result.stderr
    assert f"{path} is {kind}" in result.stderr and "not a regular file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    link = tmp_path / "linked.json"
    link.symlink_to(SAMPLE)
    result = lorapod("dataset", "validate", str(link))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 27 trainable pairs" in result.stdout


def test_the_engine_refuses_a_dataset_that_is_not_a_regular_file(tmp_path: Path) -> None:
    path, kind = _fifo(tmp_path)
    spec = JobSpec.model_validate({"base_model": "demo", "dataset": {"dataset_path": str(path)}})
    with pytest.raises(DatasetError, match=f"{path} is {kind}, not a regular file"):
        prepare(spec, Workdir(tmp_path / "job"), tokenizer=None)  # type: ignore[arg-type]
