"""A RunPod job's adapter merged on a pod: for a base model too big to merge on this machine.

quote (the GPU, its hourly rate and the disk the merge needs on the job's network volume, shown before anything
is rented; a volume too small is refused there) → create the pod (its entrypoint runs ``engine.merge_pod``:
``LORAPOD_MERGE=1``) with the job's network volume → record it as an attempt of the job, so its cost is billed
in the ledger and counted by the budget → on RunPod's stock image, bootstrap it over SSH as a job's pod is
(remote.runpod.launch; it is handed no file and no secret) → wait while it merges → download the merged files
one by one into the output folder, each checked against the pod's manifest → delete the pod and close its attempt
with its cost.
The pod is deleted and its attempt closed however this ends: merged, failed, a download that gives up, Ctrl-C.
A pod whose client is gone deletes itself after its linger, and its watchdog after the job's maximum duration.
No secret travels: the base weights are in the volume's Hugging Face cache, where the job put them. A merge pod
whose process fails while starting is deleted, its last log lines in the error.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import JobSpec
from engine.memory import BF16_BYTES, parameters_b
from engine.pod import pod_workdir
from engine.pod_secrets import token_sha256
from remote.exports import ExportError
from remote.provider import RunHandle
from remote.runpod.client import RestClient
from remote.runpod.errors import NoCapacity, RunPodError, TransportError
from remote.runpod.launch import STOCK_INSTALL_S, ServicePod, ServicePodOwner
from remote.runpod.merge_download import PARTIAL_MARKER, MergePodClient
from remote.runpod.plan import PodPlan, plan_pod
from remote.runpod.pods import POD_API_PORT
from remote.runpod.prices import estimated_rate
from remote.runpod.sizing import disk_need
from remote.runpod.ssh import HostKeyPins
from store import attempts as attempt_store
from store.db import Ledger
from store.jobs import job_spec, short_id
from store.models import TrainingJob
from store.settings import Settings

log = logging.getLogger(__name__)

NAME_PREFIX = "lorapod-merge-"
KIND = "merge"
MERGED_SHARE = 1.05  # the merged weights, with the tokenizer, config and a margin
POLL_S = 2.0
GONE_OUTCOME = "merge-gone"


@dataclass(frozen=True)
class MergeQuote:
    """What merging a job's adapter on a pod would rent, before it is rented."""

    job_id: uuid.UUID
    gpu: str
    rate_usd_per_hour: float
    volume_id: str
    volume_gb: int | None
    base_gb: float | None  # the base weights already on the volume; None: unknown size
    merged_gb: float | None  # what the merge writes beside them
    image: str = ""
    stock: bool = False  # RunPod's stock image: lorapod's train stack is installed at start

    @property
    def need_gb(self) -> float | None:
        return None if self.base_gb is None or self.merged_gb is None else self.base_gb + self.merged_gb

    def disk(self) -> str:
        if self.need_gb is None:
            return (f"network volume {self.volume_id} ({self.volume_gb} GB) holds the base weights; the merged "
                    "weights' size is unknown (set model_size_b), so the pod checks its free space itself")  # fmt: skip
        return (
            f"network volume {self.volume_id} ({self.volume_gb} GB) needs {self.need_gb:.0f} GB: the base weights "
            f"({self.base_gb:.0f} GB, in its cache since the job ran) and the merged bf16 weights beside them "
            f"({self.merged_gb:.0f} GB, 2 bytes a parameter +5%)"
        )

    def describe(self) -> str:
        text = (
            f"a {self.gpu} pod at ${self.rate_usd_per_hour:.2f}/h, billed to job {short_id(self.job_id)} until the "
            f"merged files are downloaded here; {self.disk()}"
        )
        if self.stock:
            text += (
                f"; it starts on RunPod's stock image ({self.image}) and installs lorapod's train stack first "
                "(once per network volume): its start takes longer, and is billed"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "rate_usd_per_hour": self.rate_usd_per_hour, "network_volume_id": self.volume_id,
                "volume_gb": self.volume_gb, "needed_gb": self.need_gb, "image": self.image,
                "stock_image": self.stock}  # fmt: skip


@dataclass
class MergeOnPod:
    """How a merge on a pod went: the pod, what it cost, what was downloaded."""

    pod_id: str
    gpu: str
    rate_usd_per_hour: float
    cost_usd: float
    merge_seconds: float | None
    files: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"pod_id": self.pod_id, "gpu": self.gpu, "rate_usd_per_hour": self.rate_usd_per_hour,
                "cost_usd": round(self.cost_usd, 6), "merge_seconds": self.merge_seconds}  # fmt: skip


def merge_name(job_id: uuid.UUID) -> str:
    return f"{NAME_PREFIX}{job_id}"


class RunPodMerges(ServicePodOwner):
    """Quoting and running merges of RunPod jobs' adapters on pods."""

    def __init__(
        self, settings: Settings, ledger: Ledger, rest: RestClient | None = None, pins: HostKeyPins | None = None
    ) -> None:
        no_key = ExportError("a RunPod job's adapter is merged on a pod: set RUNPOD_API_KEY")
        super().__init__(settings, ledger, rest, pins, no_key=no_key)

    def quote(self, job: TrainingJob) -> MergeQuote:
        """The pod a merge of ``job``'s adapter would rent; ExportError when it cannot be done there."""
        spec = job_spec(job)
        volume = spec.resources.network_volume_id or self.settings.runpod_network_volume_id
        if not volume:
            raise ExportError(
                f"job {short_id(job.id)} ran without a network volume, so its adapter and base weights left RunPod "
                "with its pod: a merge pod reads them from the volume (merge on a machine with room for it instead)"
            )
        self.close_gone(job.id)
        plan = self._plan(spec)
        found = plan.network_volume or {}
        if found.get("size_gb") is None:
            raise ExportError(f"network volume {volume} does not exist on this RunPod account")
        params = parameters_b(spec)
        base = disk_need(spec, hub=False).weights_gb if params is not None else None
        merged = params * BF16_BYTES * MERGED_SHARE if params is not None else None
        gpu = (plan.walk or list(spec.resources.gpu_types))[0]
        quote = MergeQuote(
            job.id, gpu, estimated_rate(spec, self.settings, gpu), volume, found["size_gb"], base, merged,
            image=plan.image, stock=plan.stock,
        )  # fmt: skip
        if quote.need_gb is not None and quote.volume_gb is not None and quote.need_gb > quote.volume_gb:
            raise ExportError(
                f"{spec.base_model} cannot be merged on a pod: {quote.disk()}, and it holds {quote.volume_gb} GB — "
                "enlarge the volume in the RunPod console (it keeps its files), then run this again"
            )
        return quote

    def run(self, quote: MergeQuote, out_dir: Path, say: Callable[[str], None]) -> MergeOnPod:
        """Merge on a pod as quoted and download the merged files into ``out_dir``; the pod is deleted and its
        attempt closed with its cost however this ends."""
        job = _job(self.ledger, quote.job_id)
        spec = job_spec(job)
        token = secrets.token_urlsafe(32)
        service = self._create(job, spec, quote, token)
        pod = service.pod
        rate = pod.cost_per_hr or quote.rate_usd_per_hour
        handle = RunHandle(
            provider="runpod", job_id=str(job.id), workdir=service.workdir, pod_id=pod.id,
            extra={KIND: True, "gpu_type": pod.gpu or quote.gpu, "cost_per_hr": pod.cost_per_hr,
                   "network_volume_id": quote.volume_id},
        )  # fmt: skip
        attempt = attempt_store.start_attempt(
            self.ledger, job.id, provider="runpod", handle=handle.model_dump(), rate_usd_per_hour=rate,
            gpu_count=spec.resources.gpu_count,
        )  # fmt: skip
        client: MergePodClient | None = None
        outcome, released = "merge-interrupted", False  # Ctrl-C, or anything unforeseen
        try:  # from the attempt's start on, the pod is deleted and billed however this ends
            say(f"merge pod {pod.id} created ({pod.gpu or quote.gpu}, ${rate:.2f}/h)")
            try:
                self._hand_over(service, quote, say)
            except ExportError:
                outcome = "merge-failed"
                raise
            client = MergePodClient(self.settings.runpod_proxy_url.format(pod_id=pod.id, port=POD_API_PORT), token)
            try:
                status = self._await_merge(client, service, say)
            except ExportError:
                outcome = "merge-failed"
                raise
            if status["state"] != "merged":
                outcome = "merge-failed"
                raise ExportError(f"the merge on pod {pod.id} failed: {status.get('reason') or 'no reason given'}")
            files = list(status.get("files") or [])
            try:
                self._download(client, files, out_dir, say)
            except ExportError:
                outcome = "merge-download-failed"
                raise
            released = client.done(keep=False)
            outcome = "merged"
        finally:
            if client is not None:
                if not released:
                    client.done(keep=outcome != "merge-failed")  # a merge already made is kept for the next try
                client.close()
            service.close()
            cost = self._delete(pod.id, attempt.id, outcome)
        say(f"merge pod {pod.id} deleted; it cost ${cost:.4f}")
        return MergeOnPod(pod.id, pod.gpu or quote.gpu, rate, cost, status.get("seconds"), files)

    def close_gone(self, job_id: uuid.UUID) -> int:
        """Close the job's merge attempts whose pod is gone (a client killed outright left them open; the pod
        deleted itself after its linger), billed up to now; how many."""
        closed = 0
        for attempt in attempt_store.open_attempts(self.ledger, job_id):
            extra = attempt.handle.get("extra") or {}
            if extra.get(KIND) and not self._running(str(attempt.handle.get("pod_id"))):
                assert attempt.id is not None
                attempt_store.accrue(self.ledger, attempt.id, outcome=GONE_OUTCOME)
                closed += 1
        return closed

    # --- stages ---------------------------------------------------------------------------------------

    def _plan(self, spec: JobSpec) -> PodPlan:
        plan = plan_pod(self.settings, spec, self.rest, hub=False)
        if plan.stock and self.settings.runpod_transport == "http":
            raise ExportError(
                "the merge pod on RunPod's stock image is sent its bootstrap files over SSH (SFTP), and "
                'runpod_transport is "http": set it to "auto", or set runpod_image (docs/runpod.md)'
            )
        return plan

    def _hand_over(self, service: ServicePod, quote: MergeQuote, say: Callable[[str], None]) -> None:
        """On the stock image: wait until the pod has installed lorapod and its merge process runs (nothing is
        handed to it: no file, no secret). On lorapod's image there is nothing to wait for here."""
        if quote.stock:
            say(f"the merge pod installs lorapod's train stack on RunPod's stock image ({quote.image}) …")
        try:
            self.services.hand_over(service, [], {})
        except (RunPodError, TransportError) as exc:
            raise ExportError(f"the merge pod did not start: {exc}") from None

    def _await_merge(self, client: MergePodClient, service: ServicePod, say: Callable[[str], None]) -> dict[str, Any]:
        """The merge's final status: merged or failed."""
        pod_id = service.pod.id
        deadline = time.monotonic() + self.settings.runpod_start_timeout_s
        while client.health() is None:
            problem = service.failed()  # a stock-image pod's process, watched over SSH: it may fail as it starts
            if problem:
                raise ExportError(f"the merge pod {pod_id} did not start, and has been deleted: {problem}")
            if time.monotonic() >= deadline or not self._running(pod_id):
                raise ExportError(
                    f"the merge pod {pod_id} did not answer within {self.settings.runpod_start_timeout_s:.0f} s"
                )
            time.sleep(1.0)
        say("merging on the pod …")
        shown = 0.0
        while True:
            status = client.status()
            if status is not None and status.get("state") in ("merged", "failed"):
                return status
            if status is None:
                problem = service.failed()
                if problem or not self._running(pod_id):
                    why = f": {problem}" if problem else ""
                    raise ExportError(f"the merge pod {pod_id} stopped before the merge ended{why}")
            seconds = float((status or {}).get("seconds") or 0)
            if seconds - shown >= 60:
                say(f"merging on the pod … {seconds / 60:.0f} min")
                shown = seconds
            time.sleep(POLL_S)

    def _download(
        self, client: MergePodClient, files: list[dict[str, Any]], out_dir: Path, say: Callable[[str], None]
    ) -> None:
        total = sum(int(f["size"]) for f in files)
        say(f"merged on the pod: downloading {len(files)} files ({total / 1e9:.2f} GB) into {out_dir}")
        out_dir.mkdir(parents=True, exist_ok=True)
        marker = out_dir / PARTIAL_MARKER
        marker.write_text("a merged model downloading from a merge pod: give this folder again to go on\n")
        root = out_dir.resolve()
        for entry in files:
            target = (out_dir / str(entry["name"])).resolve()
            if not target.is_relative_to(root):
                raise ExportError(f"the merge pod named a file outside the output folder: {entry['name']}")
            client.download(entry, target)
            say(f"  {entry['name']} ({int(entry['size']) / 1e6:.1f} MB, sha256 checked)")
        marker.unlink()

    def _create(self, job: TrainingJob, spec: JobSpec, quote: MergeQuote, token: str) -> ServicePod:
        settings = self.settings
        plan = self._plan(spec)
        hours = spec.resources.max_hours or settings.max_duration_hours
        install = STOCK_INSTALL_S if plan.stock else 0.0
        env = {
            "LORAPOD_JOB_ID": str(job.id),
            "LORAPOD_MERGE": "1",
            # Only the token's hash: the pod's env is readable by anyone who can read the RunPod account.
            "LORAPOD_POD_TOKEN_SHA256": token_sha256(token),
            "LORAPOD_WORKSPACE": settings.runpod_volume_mount_path,
            "LORAPOD_LINGER_S": f"{settings.runpod_pod_linger_s:g}",
            "LORAPOD_MAX_SECONDS": f"{hours * 3600 + install:.0f}",
            "LORAPOD_RUNPOD_API_URL": settings.runpod_api_url,
            "HF_HUB_OFFLINE": "1",  # the weights come from the volume's cache, with no token to ask the Hub
        }
        walk = [quote.gpu, *(g for g in plan.walk if g != quote.gpu)]
        workdir = str(pod_workdir(settings.runpod_volume_mount_path, str(job.id)))
        try:
            return self.services.create(
                job.id, plan, env, workdir=workdir, token=token, name=merge_name(job.id), walk=walk, handover=False
            )
        except NoCapacity:
            raise ExportError(f"no GPU free for a merge pod (tried {', '.join(walk)}); try again later") from None

    def _delete(self, pod_id: str, attempt_id: int | None, outcome: str) -> float:
        try:
            self.rest.delete_pod(pod_id)
        except RunPodError as exc:
            log.error("merge pod %s was not deleted (%s): it deletes itself after its linger", pod_id, exc)
        assert attempt_id is not None
        cost, _ = attempt_store.accrue(self.ledger, attempt_id, outcome=outcome)
        log.info("merge pod %s deleted (%s): $%.4f", pod_id, outcome, cost)
        return cost


def _job(ledger: Ledger, job_id: uuid.UUID) -> TrainingJob:
    from store.jobs import get_job

    return get_job(ledger, job_id)
