"""A pod's artifact credential, against the Storage stand-in and real PostgreSQL with lorapod's migration: it
writes its job's folder, small files and resumable ones, and is refused everything else — another job's
folder, another object, any table — once it has expired, or when it was not signed with the project's secret.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import psycopg
import pytest

from engine.artifacts import ArtifactStoreError, store_from_env, supabase_uri
from engine.supabase_storage import SupabaseStore
from store.artifacts import UPLOAD_ROLE, pod_store_environment, upload_token
from store.errors import SettingsError
from store.settings import Settings
from tests.standins.storage_access import StorageAccess
from tests.standins.supabase_storage import StorageStandIn
from tests.test_artifact_store import MB, _file

JWT_SECRET = "jwt-secret-of-the-test-project-with-32-chars-or-more"
ANON_KEY = "anon-key-of-the-test-project"
SERVICE_KEY = "service-role-key-of-the-test-project"
BUCKET = "model-artifacts"


@pytest.fixture
def project(db: str, tmp_path: Path) -> Iterator[tuple[StorageStandIn, StorageAccess]]:
    access = StorageAccess(db, jwt_secret=JWT_SECRET, anon_key=ANON_KEY, service_key=SERVICE_KEY)
    storage = StorageStandIn(tmp_path / "storage", access=access).start()
    yield storage, access
    storage.stop()


def _settings(storage: StorageStandIn, **extra: object) -> Settings:
    values: dict[str, object] = {
        "artifact_store": "supabase", "supabase_url": storage.url, "supabase_service_role_key": SERVICE_KEY,
        "supabase_jwt_secret": JWT_SECRET, "supabase_anon_key": ANON_KEY, **extra,
    }  # fmt: skip
    return Settings(**values)  # type: ignore[arg-type]


def _scoped(storage: StorageStandIn, job_id: uuid.UUID, tmp_path: Path, **options: object) -> SupabaseStore:
    plain, secret = pod_store_environment(_settings(storage), job_id, valid_for_s=3600)
    store = store_from_env({**plain, **secret}, state_dir=tmp_path / "state")
    assert isinstance(store, SupabaseStore)
    for name, value in options.items():
        setattr(store, name, value)
    return store


def test_the_pods_credential_holds_no_service_key_and_expires_with_the_pod(
    project: tuple[StorageStandIn, StorageAccess],
) -> None:
    storage, _ = project
    job_id = uuid.uuid4()
    plain, secret = pod_store_environment(_settings(storage), job_id, valid_for_s=7200)
    assert SERVICE_KEY not in json.dumps([plain, secret]) and "SUPABASE_SERVICE_ROLE_KEY" not in {**plain, **secret}
    assert set(plain) == {"LORAPOD_ARTIFACT_STORE", "LORAPOD_SUPABASE_BUCKET"}  # nothing secret travels plain
    claims = jwt.decode(secret["LORAPOD_SUPABASE_TOKEN"], JWT_SECRET, algorithms=["HS256"])
    assert claims["role"] == UPLOAD_ROLE and claims["job_id"] == str(job_id) and claims["bucket"] == BUCKET
    assert 7190 <= claims["exp"] - claims["iat"] <= 7200
    with pytest.raises(SettingsError, match="SUPABASE_JWT_SECRET"):
        pod_store_environment(_settings(storage, supabase_jwt_secret=None), job_id, valid_for_s=60)


def test_the_credential_uploads_its_jobs_packages_small_and_resumable(
    project: tuple[StorageStandIn, StorageAccess], tmp_path: Path
) -> None:
    storage, _ = project
    job_id = uuid.uuid4()
    store = _scoped(storage, job_id, tmp_path)
    small = _file(tmp_path / "adapter.zip", 4096)
    large = _file(tmp_path / "full.zip", 7 * MB)  # above 6 MB: TUS
    for path in (small, large):
        stored = store.upload(path, str(job_id))
        assert stored.uri == supabase_uri(BUCKET, f"jobs/{job_id}/{path.name}")
        assert storage.path(BUCKET, f"jobs/{job_id}/{path.name}").read_bytes() == path.read_bytes()
    assert storage.stats.creates == 1  # the large one went resumably
    store.upload(small, str(job_id))  # again: an upsert of its own file is allowed
    downloaded = store.download(supabase_uri(BUCKET, f"jobs/{job_id}/adapter.zip"), tmp_path / "back")
    assert downloaded.read_bytes() == small.read_bytes()


def test_outside_its_jobs_folder_the_credential_is_refused(
    project: tuple[StorageStandIn, StorageAccess], tmp_path: Path
) -> None:
    storage, _ = project
    job_id, other = uuid.uuid4(), uuid.uuid4()
    service = SupabaseStore(storage.url, SERVICE_KEY, bucket=BUCKET)
    secret_package = _file(tmp_path / "theirs.zip", 2048)
    service.upload(secret_package, str(other))
    store = _scoped(storage, job_id, tmp_path)
    mine = _file(tmp_path / "mine.zip", 2048)
    with pytest.raises(ArtifactStoreError, match="row-level security"):
        store.upload(mine, str(other))  # another job's folder
    with pytest.raises(ArtifactStoreError):
        store.upload(_file(tmp_path / "big.zip", 7 * MB), str(other))  # resumably too
    with pytest.raises(ArtifactStoreError, match="HTTP 404"):
        store.download(supabase_uri(BUCKET, f"jobs/{other}/theirs.zip"), tmp_path / "stolen")
    with pytest.raises(ArtifactStoreError):
        store.signed_url(supabase_uri(BUCKET, f"jobs/{other}/theirs.zip"))
    assert not (tmp_path / "stolen" / "theirs.zip").exists()
    assert storage.path(BUCKET, f"jobs/{other}/theirs.zip").read_bytes() == secret_package.read_bytes()
    assert not storage.path(BUCKET, f"jobs/{other}/mine.zip").exists()


def test_the_credential_reads_no_table(project: tuple[StorageStandIn, StorageAccess], tmp_path: Path) -> None:
    """What the REST API would run for the same token: its role, its claims, row-level security on."""
    storage, access = project
    job_id = uuid.uuid4()
    token = pod_store_environment(_settings(storage), job_id, valid_for_s=600)[1]["LORAPOD_SUPABASE_TOKEN"]
    caller = access.identify(f"Bearer {token}", ANON_KEY)
    assert caller is not None and caller.role == UPLOAD_ROLE
    SupabaseStore(storage.url, SERVICE_KEY, bucket=BUCKET).upload(_file(tmp_path / "a.zip", 1024), str(uuid.uuid4()))
    for table in ("lorapod.training_jobs", "lorapod.job_events", "lorapod.model_artifacts", "auth.users"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), access.as_caller(caller) as conn:
            conn.execute(f"SELECT * FROM {table}")  # type: ignore[arg-type]
    with access.as_caller(caller) as conn:  # storage.objects: its own folder's rows only, and there are none
        assert conn.execute("SELECT count(*) FROM storage.objects").fetchone() == (0,)


def test_an_expired_or_forged_credential_is_refused(
    project: tuple[StorageStandIn, StorageAccess], tmp_path: Path
) -> None:
    storage, _ = project
    job_id = uuid.uuid4()
    settings = _settings(storage)
    expired = upload_token(settings, job_id, valid_for_s=60, now=time.time() - 3600)
    forged = jwt.encode(
        {"role": UPLOAD_ROLE, "job_id": str(job_id), "bucket": BUCKET, "exp": int(time.time()) + 600},
        "not-the-projects-secret-but-long-enough-for-hs256", algorithm="HS256",
    )  # fmt: skip
    package = _file(tmp_path / "adapter.zip", 1024)
    for token in (expired, forged):
        store = SupabaseStore(storage.url, ANON_KEY, bucket=BUCKET, token=token)
        with pytest.raises(ArtifactStoreError, match="invalid signature"):
            store.upload(package, str(job_id))
    assert not storage.path(BUCKET, f"jobs/{job_id}/adapter.zip").exists()
