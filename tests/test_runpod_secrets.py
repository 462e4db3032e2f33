"""No key that opens more than its job reaches RunPod: a whole job on the RunPod stand-in with its packages in
Supabase Storage (the Storage stand-in, deciding access by RLS in real PostgreSQL). Every REST request to RunPod
and every answer it gives is captured: no secret is in any of them, the packages upload with the job's scoped
credential, and nothing secret is left on the volume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store.artifacts import UPLOAD_ROLE
from tests.runpod_helpers import SMOKE, Cluster, demo_cluster, lorapod, only_job, show
from tests.standins.storage_access import StorageAccess
from tests.standins.supabase_storage import StorageStandIn

pytestmark = pytest.mark.slow
__all__ = ["demo_cluster"]  # the module's stand-in RunPod (a fixture)

JWT_SECRET = "jwt-secret-of-the-runpod-test-project-0123456789"
ANON_KEY = "anon-key-of-the-runpod-test-project"
SECRETS = {
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-key-NEVER-ON-A-POD-5c2e",
    "SUPABASE_JWT_SECRET": JWT_SECRET,
    "HF_TOKEN": "hf_NEVER_IN_RUNPOD_9a7b",
    "TRAINING_WEBHOOK_SECRET": "whsec_NEVER_IN_RUNPOD_41d0",
}


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a parsed JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _leaks(texts: list[str], secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if any(secret in text for text in texts)]


def test_a_supabase_job_sends_runpod_no_secret_and_uploads_with_its_scoped_credential(
    cluster: Cluster, db: str, tmp_path: Path
) -> None:
    access = StorageAccess(
        db, jwt_secret=JWT_SECRET, anon_key=ANON_KEY, service_key=SECRETS["SUPABASE_SERVICE_ROLE_KEY"]
    )
    storage = StorageStandIn(tmp_path / "storage", access=access).start()
    try:
        env = cluster.env(
            tmp_path / "home", LORAPOD_ARTIFACT_STORE="supabase", SUPABASE_URL=storage.url, SUPABASE_ANON_KEY=ANON_KEY,
            **SECRETS,
        )  # fmt: skip
        seen = len(cluster.standin.requests), len(cluster.standin.responses)
        result = lorapod("run", *SMOKE, env=env, timeout=400)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    finally:
        storage.stop()
    job = show(only_job(env)["short_id"], env)
    assert job["status"] == "completed"
    job_id = job["id"]

    # What RunPod was told and what it answered: every request body, every GET /pods answer. The pod token and
    # the scoped upload credential are secrets too, and never went there either.
    requests = cluster.standin.requests[seen[0] :]
    answers = [body for method, path, body in cluster.standin.responses[seen[1] :] if path.startswith("/v1/pods")]
    assert any(method == "POST" for method, _, _ in requests) and answers
    texts = [json.dumps(body) for _, _, body in requests] + [s for _, _, body in requests for s in _strings(body)]
    texts += answers
    pod_token = (tmp_path / "home" / "pod-tokens").glob("*")
    secrets = [*SECRETS.values(), *(path.read_text() for path in pod_token)]
    assert _leaks(texts, secrets) == []
    created = next(body for method, path, body in requests if method == "POST" and path == "/v1/pods")
    assert not {"SUPABASE_SERVICE_ROLE_KEY", "HF_TOKEN", "TRAINING_WEBHOOK_SECRET", "LORAPOD_POD_TOKEN",
                "LORAPOD_SUPABASE_TOKEN", "SUPABASE_URL"} & set(created["env"])  # fmt: skip

    # The packages went up with the job's own credential, into its folder, and nothing else was written.
    writes = access.writes
    assert writes and {(role, claim) for role, claim, _, _ in writes} == {(UPLOAD_ROLE, job_id)}
    names = {key for _, _, _, key in writes}
    assert {a["path"] for a in job["artifacts"]} == {f"supabase://model-artifacts/{n}" for n in names}
    assert all(name.startswith(f"jobs/{job_id}/") for name in names) and len(names) == 3
    for name in names:
        assert storage.path("model-artifacts", name).is_file()

    # Nothing secret on the volume, and no secrets file left in the pod's tmpfs.
    volume_files = [p for p in cluster.volume.rglob("*") if p.is_file() and not p.is_symlink()]
    assert volume_files and not [p for p in volume_files if _leaks([p.read_bytes().decode(errors="replace")], secrets)]
    folder = Path(env["LORAPOD_RUNPOD_SECRETS_DIR"])
    assert folder.is_dir() and list(folder.iterdir()) == []
