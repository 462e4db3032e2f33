"""``lorapod rate`` (blind human rating of a job's held-out replies) and ``lorapod judge`` (an OpenAI-compatible
endpoint judging them from this machine)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import click

from engine.judge import judge_pairs
from store.jobs import short_id
from store.judgements import save_judgement
from store.models import TrainingJob
from store.ratings import (
    HUMAN_TARGET,
    adapter_label,
    choice_from_key,
    held_out_pairs,
    human_summary,
    rated_by,
    record_rating,
)
from tui.cli.common import JOB_ARGUMENT, open_context
from tui.cli.output import emit_json
from tui.cli.results import JSON_OPTION


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def human_line(summary: dict[str, Any] | None) -> str:
    """One line: the adapter's win rate among people, its interval, and the target."""
    if not summary:
        return "not rated yet (`lorapod rate JOB`)"
    low, high = summary["ci95"] or (None, None)
    return (
        f"adapter preferred {summary['adapter_wins']}, base {summary['base_wins']}, ties {summary['ties']} — "
        f"win rate {percent(summary['win_rate'])} (95% CI {percent(low)}–{percent(high)}) from "
        f"{summary['ratings']} ratings by {len(summary['raters'])} rater(s); target: preferred "
        f"{HUMAN_TARGET:.0%} more often than the base"
    )


def judge_line(judge: dict[str, Any] | None) -> str:
    """One line: what the judge decided, its interval, and who judged."""
    if not judge:
        return "not judged"
    low, high = judge.get("ci95") or (None, None)
    return (
        f"adapter won {judge['wins']}, tied {judge['ties']}, lost {judge['losses']} ({judge['unparsed']} unreadable) "
        f"— win rate {percent(judge['win_rate'])} (95% CI {percent(low)}–{percent(high)}); {judge.get('judge')}"
    )


def _show_pair(pair: dict[str, Any], label: str, number: int, total: int) -> None:
    adapter, base = pair.get("adapter") or "", pair.get("base") or ""
    first, second = (adapter, base) if label == "A" else (base, adapter)
    user = next((m["content"] for m in reversed(pair.get("prompt") or []) if m["role"] == "user"), "")
    click.echo(f"\n── prompt {number} of {total} " + "─" * 40)
    click.echo(user.strip())
    click.echo("\n── A " + "─" * 50)
    click.echo(first.strip() or "(empty reply)")
    click.echo("\n── B " + "─" * 50)
    click.echo(second.strip() or "(empty reply)")


@click.command()
@JOB_ARGUMENT
@click.option("--rater", default=None, help="Your name, kept with each rating (default: your login).")
@click.option("--summary", "only_summary", is_flag=True, help="Print the ratings so far; rate nothing.")
@JSON_OPTION
def rate(job_id: str, rater: str | None, only_summary: bool, as_json: bool) -> None:
    """Rate JOB's held-out replies blind: each prompt with two replies, A and B, in random order.

    Keys: a, b, t (tie), s (skip), q (quit). Which reply was the adapter's is shown after each rating. Keys
    can come from a pipe too: `printf 'a\\nb\\nq\\n' | lorapod rate JOB --rater ana`.
    """
    context = open_context()
    job = context.job(job_id)
    name = (rater or getpass.getuser()).strip()
    if not only_summary:
        _rate_loop(context.ledger, job, name)
    summary = human_summary(context.ledger, job.id)
    if summary is not None:
        update_eval_json(job, "human", summary)  # beside the judge and the perplexities, where the job ran here
    if as_json:
        emit_json({"job": str(job.id), "human": summary})
    else:
        click.echo(f"{short_id(job.id)}: {human_line(summary)}")


def _rate_loop(ledger: Any, job: TrainingJob, rater: str) -> None:
    pairs = held_out_pairs(ledger, job.id)
    done = rated_by(ledger, job.id, rater)
    todo = [i for i in range(len(pairs)) if i not in done]
    if not todo:
        click.echo(f"{rater} has rated all {len(pairs)} prompts of this job")
        return
    for count, index in enumerate(todo, start=1):
        label = adapter_label(job.id, index, rater)
        _show_pair(pairs[index], label, count, len(todo))
        key = click.prompt(
            "\nbetter reply? [a/b/t=tie/s=skip/q=quit]", type=click.Choice(["a", "b", "t", "s", "q"]),
            show_choices=False, err=True,
        )  # fmt: skip
        if key == "q":
            break
        choice = choice_from_key(key, label)
        if choice is None:
            click.echo("skipped")
            continue
        record_rating(ledger, job.id, index, rater, choice, label)
        click.echo(f"recorded: {choice} — the adapter's reply was {label}")


@click.command()
@JOB_ARGUMENT
@click.option("--url", "url", default=None, help="OpenAI-compatible base URL (default: the job's judge_url).")
@click.option("--model", "model", default=None, help="The endpoint's model (default: the job's judge_model).")
@click.option("--key-env", default=None, help="Environment variable with the key (default: JUDGE_API_KEY).")
@click.option("--rubric", default=None, help="Rubric name or .toml path (default: the job's rubric).")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Where to write the judge JSON.")
@JSON_OPTION
def judge(
    job_id: str, url: str | None, model: str | None, key_env: str | None, rubric: str | None, output: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Judge JOB's held-out replies, base against adapter, through an OpenAI-compatible endpoint.

    Each pair is judged in both orders; the result (win rate with its 95% interval, per criterion and per
    persona, arc and topic, with every prompt and raw verdict) goes to --output, by default the job's eval.json
    when its workdir is on this machine, else judge-JOB.json here.
    """
    from engine.judge_endpoint import EndpointJudge
    from presets.rubrics import load_rubric

    context = open_context()
    job = context.job(job_id)
    hp = job.hyperparameters
    url, model = url or hp.get("judge_url"), model or hp.get("judge_model")
    if not url or not model:
        raise click.UsageError("--url and --model are needed (the job names no judge_url / judge_model)")
    criteria = (
        load_rubric(rubric) if rubric else hp.get("judge_criteria") or load_rubric(hp.get("judge_rubric") or "default")
    )
    pairs = held_out_pairs(context.ledger, job.id)
    endpoint = EndpointJudge(url, model, api_key_env=key_env or hp.get("judge_api_key_env") or "JUDGE_API_KEY")
    try:
        result = judge_pairs(
            pairs, criteria, endpoint, judge=endpoint.describe(), batch_size=hp.get("eval_batch_size") or 8
        )
    finally:
        endpoint.close()
    target = _write(context.ledger, job, result, output)
    if as_json:
        emit_json(
            {"job": str(job.id), "output": str(target), "judge": {k: v for k, v in result.items() if k != "records"}}
        )
        return
    click.echo(f"{short_id(job.id)}: {judge_line(result)}; written to {target}")


def update_eval_json(job: TrainingJob, key: str, value: Any) -> Path | None:
    """Set ``key`` in the job's eval.json when its workdir is on this machine; the file it wrote, or None."""
    eval_file = Path(job.workdir) / "eval.json" if job.workdir else None
    if eval_file is None or not eval_file.is_file():
        return None
    evaluation = json.loads(eval_file.read_text(encoding="utf-8"))
    evaluation[key] = value
    tmp = eval_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(evaluation, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(eval_file)
    return eval_file


def _write(ledger: Any, job: TrainingJob, result: dict[str, Any], output: Path | None) -> Path:
    """The judge section kept beside the ledger (show, compare and the report find it there), and into
    ``output`` or the job's eval.json when its workdir is on this machine; the file the user should open."""
    kept = save_judgement(ledger, job.id, result)
    if output is not None:
        output.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
        return output
    return update_eval_json(job, "judge", result) or kept
