"""Shared fixtures: every test runs in its own lorapod installation with no secrets in its environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from store.db import Ledger
from store.supabase import migration_sql
from tests.standins.postgres import PostgresServer, PostgresUnavailable, execute_script, find_binaries
from tui.cli import cli

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
SECRET_VARIABLES = (
    "RUNPOD_API_KEY", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL", "HF_TOKEN",
    "TRAINING_WEBHOOK_SECRET", "SUPABASE_JWT_SECRET", "SUPABASE_ANON_KEY",
)  # fmt: skip


@pytest.fixture(autouse=True)
def lorapod_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh LORAPOD_HOME (and HOME, so ~/.runpod is the test's own) for every test."""
    home = tmp_path / "lorapod-home"
    for name in list(os.environ):
        if name.startswith("LORAPOD_") or name in SECRET_VARIABLES or name.startswith("XDG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LORAPOD_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    # A background supervisor a test's command starts leaves as soon as nothing is live, and at the end.
    monkeypatch.setenv("LORAPOD_SUPERVISOR_IDLE_EXIT_MINUTES", "0")
    yield home
    from remote.daemon import stop
    from store.settings import resolve_paths

    stop(resolve_paths({"LORAPOD_HOME": str(home)}), timeout=15)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1 with Supabase's schemas stubbed: CI must have it, elsewhere it may skip."""
    if find_binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run these tests: PostgreSQL's initdb and postgres are missing (see .ci/run)")
        pytest.skip("PostgreSQL's initdb and postgres are not installed here (apt-get install postgresql)")
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:  # pragma: no cover — find_binaries said yes
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def db(postgres: PostgresServer) -> str:
    """A fresh database with Supabase's auth and storage stubbed and lorapod's migration applied."""
    url = postgres.database()
    execute_script(url, migration_sql())
    return url


@pytest.fixture
def two_ledgers(tmp_path: Path) -> Iterator[tuple[Ledger, Ledger]]:
    a, b = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (the dashboard's Pilot tests) run on asyncio, as Textual does."""
    return "asyncio"


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model (a tiny Llama with the Llama 3 chat template), built once for the whole session; read-only."""
    from engine.demo import build_demo_model, dataset_chats, dataset_texts

    sample = ROOT / "samples" / "brightrun-sample.json"
    target = tmp_path_factory.mktemp("models") / "tiny-llama"
    build_demo_model(target, dataset_texts(sample), dataset_chats(sample))
    return target


@dataclass(frozen=True)
class DemoJob:
    """A completed smoke job in an installation of its own: pass ``env`` to the commands that read it."""

    home: Path
    job_id: str

    @property
    def env(self) -> dict[str, str]:
        return {"LORAPOD_HOME": str(self.home)}


@pytest.fixture(scope="session")
def demo_job(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoJob:
    """One local smoke run on the sample dataset, shared read-only by the tests of what a finished job gives
    (report, exports): its ledger, workdir and packages."""
    home = tmp_path_factory.mktemp("demo-job-home")
    shutil.copytree(demo_model, home / "models" / "tiny-llama")
    env = {"LORAPOD_HOME": str(home), "LORAPOD_SUPERVISOR_IDLE_EXIT_MINUTES": "0"}
    sample = ROOT / "samples" / "brightrun-sample.json"
    result = run_lorapod("run", "--preset", "smoke", "--dataset", str(sample), "--name", "demo", env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = json.loads(run_lorapod("jobs", "--json", env=env).stdout)["jobs"]
    return DemoJob(home, str(jobs[0]["id"]))


@pytest.fixture
def ledger(lorapod_home: Path) -> Iterator[Ledger]:
    led = Ledger(lorapod_home / "ledger.sqlite")
    yield led
    led.close()


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``lorapod ARGS`` in-process; the result has exit_code, stdout and stderr."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def run_lorapod(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``lorapod`` as a real process, in this test's environment."""
    command = [sys.executable, "-c", "from tui.cli import main; main()", *args]
    return subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        **kwargs,
    )  # type: ignore[call-overload]
