"""The GPU check's figures as markdown, and the BENCHMARKS.md section they replace (between its markers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN, END = "<!-- gpu_check: begin -->", "<!-- gpu_check: end -->"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _row(label: str, batch: Any, figures: dict[str, Any], status: str) -> str:
    if status != "ok":
        return f"| {label} | {batch} | {status}: {figures.get('message', '')[:160]} | | | | |"
    mfu = f"{_num(figures.get('mfu_6n'), '.1%')} / {_num(figures.get('mfu_4n_2n'), '.1%')}"
    mfu_80 = f"{_num(figures.get('mfu_6n_80'), '.1%')} / {_num(figures.get('mfu_4n_2n_80'), '.1%')}"
    peak = figures.get("peak_memory_gib")
    if peak is None and figures.get("peak_memory_gb") is not None:
        peak = figures["peak_memory_gb"] * 1e9 / 1024**3
    rate, rate_80 = _num(figures.get("tokens_per_s"), ",.0f"), _num(figures.get("tokens_per_s_80"), ",.0f")
    peak_80 = _num(figures.get("peak_memory_gib_80"), ".1f")
    return f"| {label} | {batch} | {rate} | {mfu} | {_num(peak, '.1f')} GiB | {rate_80} | {mfu_80}, {peak_80} GiB |"


def markdown(result: dict[str, Any]) -> str:
    """The check's table: each bench configuration, then the engine job, then what calibrate recorded."""
    toy = result["toy"]
    title = f"{result['device']}, K={result['layers']}" + (" — TOY shapes on a CPU: a code-path check" if toy else "")
    lines = [
        f"`benchmarks/gpu_check.sh{' --toy' if toy else ''}` on {title}, {result['when']}, {result['seconds']} s "
        f"in all. The engine's `auto` attention here: `{result['engine_defaults']['attn']}`.",
        "",
        "| run | batch | tokens/s (K layers) | MFU 6N / 4N+2N | peak memory | 80-layer tokens/s "
        "| 80-layer MFU, memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in result["bench"]:
        lines.append(_row(f"bench: {run['setting']}", run["batch"], run, run["status"]))
    job = result["job"]
    label = "engine job: prepare → train → evaluate → package"
    if job.get("status") == "ok" or job.get("stages"):
        label += f" ({' → '.join(job.get('stages', []))}; {job.get('optimizer_steps', 0)} logged steps)"
    job_status = job.get("status", "skipped")
    job_row = job if job_status == "ok" else {"message": job.get("error") or job.get("message") or ""}
    lines.append(_row(label, job.get("batch", "—"), job_row, job_status))
    if job.get("speed_settings"):
        lines += ["", f"The job's log: {job['speed_settings']}"]
    calibration = result["calibrate"]
    if calibration.get("status") == "ok":
        lines += ["", f"`lorapod costs calibrate` recorded: {calibration.get('recorded')}"]
    else:
        lines += ["", f"`lorapod costs calibrate`: {calibration.get('status')}: {calibration.get('message', '')[:300]}"]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace what lies between the gpu_check markers in ``path`` (added at the end when missing)."""
    report = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in report and END in report:
        head, rest = report.split(BEGIN, 1)
        report = head + block + rest.split(END, 1)[1]
    else:
        report = report.rstrip("\n") + ("\n\n" if report else "") + block + "\n"
    path.write_text(report, encoding="utf-8")


def main(argv: list[str]) -> int:
    """``python -m benchmarks.gpu_report RESULT.json [REPORT.md]``: a GPU machine's gpu_check.json into the report."""
    import json
    import sys

    if not 1 <= len(argv) <= 2:
        print("usage: python -m benchmarks.gpu_report gpu_check.json [BENCHMARKS.md]", file=sys.stderr)
        return 2
    result = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    write_section(Path(argv[1] if len(argv) > 1 else "BENCHMARKS.md"), markdown(result))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
