"""Client reports: one self-contained HTML page per job, or comparing several (``lorapod report``).

The page carries its own CSS and inline SVG charts, loads nothing at view time (no scripts, fonts or images
from anywhere) and prints to PDF. It says what was trained on, how, the curves, perplexity overall and per
group, the judge, human-rating and retention results against their targets, side-by-side samples and the
packages' checksums; a result that was not measured says so.

    gather (data.py) → charts (charts.py) → template.html.j2 (Jinja2, autoescaped)
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from store.db import Ledger
from store.errors import StoreError
from store.jobs import get_job
from store.report import charts
from store.report.data import HYPERPARAMETERS, JobReport, gather

HERE = Path(__file__).parent
# eval.json's quality sections, as issue 16's evaluation writes them; each one absent reads "not measured".
QUALITY_SECTIONS = (
    ("judge", "LLM judge (pairwise, both orders)"),
    ("human", "Blind human rating"),
    ("retention", "Knowledge retention (forgetting check)"),
)


class ReportError(StoreError):
    """A report that cannot be written: no jobs given, or the output file cannot be written."""


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report and the model card: autoescaped HTML, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE),
        # HTML is escaped; the model card is Markdown, whose text is written as the job has it.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=number, pct=percent, change=change, size=size, when=when, duration=duration, text=plain)
    env.tests.update(mapping=lambda v: isinstance(v, dict), scalar=_is_scalar, sequence=_is_list)
    return env


def render(jobs: Sequence[JobReport], *, generated_at: datetime | None = None) -> str:
    """The report's HTML for ``jobs`` (one, or several compared)."""
    if not jobs:
        raise ReportError("a report needs at least one job")
    flat = [job.hyperparameters for job in jobs]
    differing = {name for name in HYPERPARAMETERS if len({repr(h.get(name)) for h in flat}) > 1}
    return (
        environment()
        .get_template("template.html.j2")
        .render(
            jobs=jobs,
            comparison=len(jobs) > 1,
            css=Markup((HERE / "report.css").read_text(encoding="utf-8")),
            loss_chart=_markup(charts.loss_chart(jobs)),
            learning_rate_chart=_markup(charts.learning_rate_chart(jobs)),
            perplexity_chart=_markup(charts.perplexity_chart(jobs)),
            group_tables=_group_tables(jobs),
            quality_sections=QUALITY_SECTIONS,
            hyperparameter_names=HYPERPARAMETERS,
            differing=differing,
            colours=[charts.colour(i) for i in range(len(jobs))],
            generated_at=generated_at or datetime.now(UTC),
            version=_version(),
        )
    )


def report_name(short_ids: Sequence[str]) -> str:
    """The report's default file name: ``report-<short id>[-<short id>…].html``."""
    return "report-" + "-".join(short_ids) + ".html"


def build_report(ledger: Ledger, job_ids: Sequence[str], output: Path) -> Path:
    """Write the report of the jobs ``job_ids`` name (ids or unique prefixes) to ``output``."""
    jobs = [gather(ledger, get_job(ledger, job_id)) for job_id in job_ids]
    html = render(jobs)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        partial.write_text(html, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        raise ReportError(f"{output}: cannot write the report ({exc.strerror or exc})") from None
    return output


def _markup(svg: str | None) -> Markup | None:
    # matplotlib's own SVG: job names in legends are escaped by its writer, so it goes in as markup.
    return Markup(svg) if svg is not None else None


def _group_tables(jobs: Sequence[JobReport]) -> dict[str, list[dict[str, Any]]]:
    """Per group key (persona, arc, topic): a row per group value, with each job's base and adapter perplexity."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for index, job in enumerate(jobs):
        for key, groups in (job.evaluation.get("groups") or {}).items():
            for name, values in groups.items():
                row = tables.setdefault(key, {}).setdefault(name, {"name": name, "jobs": [None] * len(jobs)})
                row["jobs"][index] = values
    return {key: sorted(rows.values(), key=lambda r: str(r["name"])) for key, rows in tables.items()}


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def number(value: Any, digits: int = 4) -> str:
    """A figure as a client reads it: thousands separated, a few significant digits, "—" for none."""
    if isinstance(value, (list, tuple)):
        return ", ".join(number(v, digits) for v in value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        text = "—"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        text = f"{value:.2e}"
    elif isinstance(value, float):
        text = f"{value:,.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    else:
        text = str(value)
    return text


def percent(value: Any, digits: int = 1) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{value * 100:.{digits}f}%"


def change(before: Any, after: Any) -> str:
    """The relative change from ``before`` to ``after`` to 0.1%, rounded toward zero as the targets' figures are,
    so a 29.96% drop reads 29.9% here too, never 30.0% beside a target of 30% it missed."""
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)) or before <= 0:
        return "—"
    return f"{math.trunc((after - before) / before * 1000) / 10:.1f}%"


def size(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return "—"  # pragma: no cover — the loop returns at GB


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else "—"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def plain(key: Any) -> str:
    """A field name as words: ``win_rate`` → "win rate"."""
    return str(key).replace("_", " ")


def _version() -> str:
    try:
        return importlib.metadata.version("lorapod")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
