"""Judge rubrics: small TOML files in ``presets/rubrics/``, each a set of named questions the judge answers."""

from __future__ import annotations

import tomllib
from pathlib import Path

from engine import SpecError

RUBRIC_DIR = Path(__file__).parent / "rubrics"


class RubricError(SpecError):
    """A rubric that does not exist or does not read as named questions."""


def names() -> list[str]:
    return sorted(path.stem for path in RUBRIC_DIR.glob("*.toml"))


def load_rubric(name: str) -> dict[str, str]:
    """The criteria (name → question) of the rubric called ``name`` here, or of the TOML file at that path."""
    path = Path(name).expanduser() if name.endswith(".toml") else RUBRIC_DIR / f"{name}.toml"
    if not path.is_file():
        raise RubricError(f"judge_rubric: no rubric {name!r}; choose one of: {', '.join(names())}, or a .toml path")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RubricError(f"{path}: {exc}") from None
    criteria = data.get("criteria")
    if not isinstance(criteria, dict) or not criteria:
        raise RubricError(f'{path}: needs a [criteria] table of name = "question" lines')
    bad = [
        key for key, value in criteria.items() if not isinstance(value, str) or not value.strip() or key == "overall"
    ]
    if bad:
        raise RubricError(
            f"{path}: criteria {', '.join(bad)}: each needs a question as text (and 'overall' is asked anyway)"
        )
    return {key: value.strip() for key, value in criteria.items()}
