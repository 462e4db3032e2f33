"""``lorapod pods``: lorapod's RunPod pods, those no live job owns flagged, and deleting them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from store.errors import JobNotFound
from store.jobs import get_job, short_id
from store.status import RUNNING, TERMINAL
from tui.cli.common import Context, confirm, open_context
from tui.cli.output import emit_json, money, print_table

if TYPE_CHECKING:
    from remote.runpod import RunPodProvider
    from remote.runpod.pods import PodInfo


@dataclass
class PodRow:
    pod: PodInfo
    job_status: str | None
    orphan: str | None  # why no live job owns it, or None

    def as_dict(self) -> dict[str, Any]:
        pod = self.pod
        return {
            "pod_id": pod.id,
            "name": pod.name,
            "job_id": str(pod.job_id),
            "job_status": self.job_status,
            "pod_status": pod.desired_status,
            "gpu": pod.gpu,
            "gpu_count": pod.gpu_count,
            "cost_per_hr": pod.cost_per_hr,
            "started_at": pod.last_started_at.isoformat() if pod.last_started_at else None,
            "orphan": self.orphan,
        }


def classify(context: Context, pod: PodInfo) -> PodRow:
    """Whether a live job owns the pod: its job is missing, finished, or running on another pod."""
    try:
        job = get_job(context.ledger, str(pod.job_id))
    except JobNotFound:
        return PodRow(pod, None, "no such job in this ledger")
    if job.status in TERMINAL:
        return PodRow(pod, job.status, f"its job is {job.status}")
    if job.status in RUNNING and job.pod_id and job.pod_id != pod.id:
        return PodRow(pod, job.status, f"its job runs on pod {job.pod_id}")
    return PodRow(pod, job.status, None)


def _runpod(context: Context) -> RunPodProvider:
    from remote.runpod import RunPodProvider

    provider = context.supervisor().providers.get("runpod")
    if not isinstance(provider, RunPodProvider):
        raise click.ClickException("RunPod is not configured: set RUNPOD_API_KEY (or run `runpodctl config`)")
    return provider


@click.command()
@click.option("--terminate-orphans", is_flag=True, help="Delete the pods no live job owns.")
@click.option("--terminate", "terminate_ids", multiple=True, metavar="POD", help="Delete this pod (repeatable).")
@click.option("--forget-host-key", metavar="HOST:PORT", help="Drop a pinned SSH host key (a pod replaced on purpose).")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pods(
    terminate_orphans: bool,
    terminate_ids: tuple[str, ...],
    forget_host_key: str | None,
    assume_yes: bool,
    as_json: bool,
) -> None:
    """lorapod's RunPod pods (named lorapod-<job id>), flagging those no live job owns."""
    context = open_context()
    if forget_host_key:
        _forget(context, forget_host_key)
        return
    provider = _runpod(context)
    rows = [classify(context, pod) for pod in provider.list_pods()]
    orphans = [row for row in rows if row.orphan]
    doomed = [row for row in rows if row.pod.id in terminate_ids or (terminate_orphans and row.orphan)]
    unknown = set(terminate_ids) - {row.pod.id for row in rows}
    if unknown:
        raise click.ClickException(f"no lorapod pod {', '.join(sorted(unknown))}")
    if as_json and not doomed:
        emit_json({"pods": [row.as_dict() for row in rows], "orphans": len(orphans)})
        return
    if not as_json:
        _print(rows)
    if doomed:
        names = ", ".join(row.pod.id for row in doomed)
        if not confirm(f"Delete {len(doomed)} pod(s): {names}? Whatever they run stops now", assume_yes):
            click.echo("nothing deleted")
            return
        for row in doomed:
            provider.delete_pod(row.pod.id)
            if not as_json:
                click.echo(f"deleted pod {row.pod.id} (job {short_id(row.pod.job_id or '')})")
        if as_json:
            emit_json({"pods": [row.as_dict() for row in rows], "deleted": [row.pod.id for row in doomed]})
    elif orphans:
        click.echo(
            f"{len(orphans)} pod(s) run with no live job and keep billing: "
            "delete them with `lorapod pods --terminate-orphans`"
        )


def _print(rows: list[PodRow]) -> None:
    if not rows:
        click.echo("no lorapod pods on this RunPod account")
        return
    print_table(
        ["pod", "job", "job status", "pod status", "gpu", "$/h", "started", "owner"],
        [
            (
                row.pod.id,
                short_id(row.pod.job_id or ""),
                row.job_status or "—",
                row.pod.desired_status,
                f"{row.pod.gpu_count}× {row.pod.gpu}" if row.pod.gpu else "—",
                money(row.pod.cost_per_hr) if row.pod.cost_per_hr is not None else "—",
                row.pod.last_started_at.strftime("%m-%d %H:%M") if row.pod.last_started_at else "—",
                f"⚠ orphan: {row.orphan}" if row.orphan else "✓ live job",
            )
            for row in rows
        ],
        flexible=("gpu", "owner"),
        justify={"$/h": "right"},
    )


def _forget(context: Context, target: str) -> None:
    from store.host_keys import forget_key

    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT, e.g. 203.0.113.7:10341", param_hint="--forget-host-key")
    if forget_key(context.ledger, host, int(port)):
        click.echo(f"forgot the host key pinned for {host}:{port}; the next connection pins a new one")
    else:
        click.echo(f"no host key is pinned for {host}:{port}")
