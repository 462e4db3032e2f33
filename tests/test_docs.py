"""The README documents what exists: every setting, every command, and the two Quick start commands."""

from __future__ import annotations

import re

from store.settings import Settings
from tests.conftest import ROOT
from tui.cli import COMMANDS

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`{name}`" in README, f"README does not document setting {name}"


def test_every_command_is_documented() -> None:
    for name in COMMANDS:
        assert f"`lorapod {name}" in README, f"README does not document `lorapod {name}`"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    section = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
