"""The playground: a prompt to a job's base model and to its adapter, from ``lorapod chat`` and the Try screen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from engine.chat import Message
from store.db import Ledger
from store.settings import load_settings
from tests.conftest import ROOT, SECRET_VARIABLES, run_cli
from tests.engine_helpers import SAMPLE, tiny_spec
from tests.playground_helpers import completed_job, finished_workdir
from tests.tui_fixtures import NOW, populate, workers_done
from tui.app import LorapodApp
from tui.backend import Backend
from tui.screens.try_ import TryScreen

PROMPT = "How should I start saving for retirement?"
SIZE = (140, 40)


def greedy(workdir: Path, model_dir: Path, prompt: str, max_new_tokens: int) -> dict[str, str]:
    """The replies the job's base model and adapter give ``prompt``, generated here in the test's process."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.generation import generate_batched

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(workdir / "adapter"))
    messages: list[Message] = [{"role": "user", "content": prompt}]
    return {
        side: generate_batched(
            model, tokenizer, [messages], "cpu", adapter=side == "adapter", max_new_tokens=max_new_tokens
        )[0]
        for side in ("base", "adapter")
    }


def lorapod(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tui.cli import main; main()", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def demo_job(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """A local demo job run to completion through `lorapod run` (one short epoch of the smoke preset)."""
    home = tmp_path_factory.mktemp("playground-home")
    shutil.copytree(demo_model, home / "models" / "tiny-llama")
    env = {
        name: value for name, value in os.environ.items()
        if not (name.startswith(("LORAPOD_", "XDG_")) or name in SECRET_VARIABLES)
    }  # fmt: skip
    env.update(LORAPOD_HOME=str(home), LORAPOD_SUPERVISOR_IDLE_EXIT_MINUTES="0")
    run = lorapod(
        "run", "--preset", "smoke", "--dataset", str(SAMPLE), "--set", "num_epochs=1", "--set", "eval_generations=0",
        env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (job,) = json.loads(lorapod("jobs", "--json", env=env).stdout)["jobs"]
    return env, job


@pytest.mark.slow
def test_chat_answers_one_prompt_from_the_base_model_and_from_the_adapter(
    demo_job: tuple[dict[str, str], dict[str, Any]],
) -> None:
    env, job = demo_job
    result = lorapod("chat", job["short_id"], "--prompt", PROMPT, "--max-new-tokens", "24", "--json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    assert answer["action"] == "chat" and answer["job_id"] == job["id"] and answer["prompt"] == PROMPT
    assert answer["playground"] == {"provider": "local"}
    home = Path(env["LORAPOD_HOME"])
    expected = greedy(home / "jobs" / job["id"], home / "models" / "tiny-llama", PROMPT, 24)
    for side in ("base", "adapter"):
        reply = answer[side]
        assert reply["text"] == expected[side]  # the same greedy reply as the model and adapter give in-process
        assert 0 < reply["tokens"] <= 24 and 0 < reply["first_token_s"] <= reply["seconds"]
    assert answer["base"]["text"] != answer["adapter"]["text"]


def test_chat_refuses_a_job_with_no_adapter_and_json_without_a_prompt(ledger: Ledger, tmp_path: Path) -> None:
    job = completed_job(ledger, tiny_spec(tmp_path / "model"), str(tmp_path / "empty-workdir"))
    refused = run_cli("chat", str(job.id)[:8], "--prompt", "hello", "--json")
    assert refused.exit_code == 1
    assert f"left no adapter in {tmp_path / 'empty-workdir' / 'adapter'}" in refused.stderr
    usage = run_cli("chat", str(job.id)[:8], "--json")
    assert usage.exit_code == 2 and "--json answers one prompt: give it with --prompt" in usage.stderr


def test_chat_stop_says_when_a_job_has_no_playground_pod_up(ledger: Ledger, tmp_path: Path) -> None:
    job = completed_job(ledger, tiny_spec(tmp_path / "model", SAMPLE, "provider=runpod"), "/workspace/x")
    stopped = run_cli("chat", str(job.id)[:8], "--stop")
    assert stopped.exit_code == 0 and f"job {str(job.id)[:8]} has no playground pod up" in stopped.stdout


# --- the Try screen ------------------------------------------------------------------------------------------


async def until(pilot: Any, predicate: Any, timeout: float = 240) -> None:
    """Pause the pilot until ``predicate()`` holds (the model server starts in a subprocess)."""
    waited = 0.0
    while not predicate():
        assert waited < timeout, "timed out"
        await pilot.pause(0.2)
        waited += 0.2


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_try_screen_streams_one_prompt_into_the_base_and_adapter_panes(
    lorapod_home: Path, demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TryScreen, "max_new_tokens", 24)
    settings = load_settings()
    workdir = finished_workdir(tmp_path / "job", demo_model)
    ledger = Ledger(settings.paths.ledger)
    job = completed_job(ledger, tiny_spec(demo_model), str(workdir.root))
    app = LorapodApp(Backend(settings), follow=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await workers_done(app)
        await pilot.press("p")  # the job under the jobs table's cursor
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, TryScreen) and screen.job_id == str(job.id)
        prompt = screen.query_one("#try-prompt", Input)
        await until(pilot, lambda: not prompt.disabled)
        prompt.value = PROMPT
        await pilot.press("enter")
        await until(pilot, lambda: "done" in str(screen.query_one("#try-status").content))
        expected = greedy(workdir.root, demo_model, PROMPT, 24)
        for side in ("base", "adapter"):
            assert screen.reply_text(side).strip() == expected[side]
            assert screen.updates[side] >= 2  # the reply grew piece by piece, not at once
        assert not prompt.disabled  # ready for the next prompt
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, TryScreen)


@pytest.mark.anyio
async def test_the_palette_opens_the_try_screen_which_says_why_a_job_cannot_be_tried(lorapod_home: Path) -> None:
    settings = load_settings()
    populate(Ledger(settings.paths.ledger))
    app = LorapodApp(Backend(settings, clock=lambda: NOW), follow=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await workers_done(app)
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"Try job 00000005")
        await pilot.pause(0.6)
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, TryScreen) and screen.job_id.startswith("00000005")
        await until(pilot, lambda: "cannot start" in str(screen.query_one("#try-status").content), timeout=30)
        status = str(screen.query_one("#try-status").content)
        # A completed local job whose workdir holds no adapter: a mark and words, not colour alone.
        assert status.startswith("✗ cannot start: job 00000005") and "left no adapter" in status
        assert screen.query_one("#try-prompt", Input).disabled
