"""A real PostgreSQL server on 127.0.0.1 for tests and benchmarks, and the Supabase schemas it lacks.

The server runs from a fresh ``initdb`` in a temporary folder, as the ``postgres`` user when this process is
root (PostgreSQL refuses to run as root), with trust authentication on 127.0.0.1 only. Each test takes its
own database, with ``auth`` and ``storage`` stubbed as Supabase has them: ``auth.users``, ``auth.uid()``
(read from the request's JWT claims, as PostgREST sets them), ``storage.buckets`` and ``storage.objects``,
the roles anon, authenticated and service_role, and the extensions Supabase enables (pgcrypto, uuid-ossp).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

SUPABASE_STUB = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
END
$$;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE SCHEMA IF NOT EXISTS auth;
CREATE TABLE IF NOT EXISTS auth.users (id uuid PRIMARY KEY, email text);
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT nullif(coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
    ), '')::uuid
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE SCHEMA IF NOT EXISTS storage;
CREATE TABLE IF NOT EXISTS storage.buckets (
    id text PRIMARY KEY,
    name text NOT NULL,
    public boolean DEFAULT false,
    created_at timestamptz DEFAULT now()
);
CREATE TABLE IF NOT EXISTS storage.objects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket_id text REFERENCES storage.buckets (id),
    name text NOT NULL,
    owner uuid,
    metadata jsonb,
    created_at timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS bucketid_objname ON storage.objects (bucket_id, name);
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;
GRANT ALL ON storage.buckets, storage.objects TO authenticated, service_role;
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed on this machine."""


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or None."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throwaway PostgreSQL cluster; ``database()`` makes a fresh database and returns its URL."""

    def __init__(self) -> None:
        binaries = find_binaries()
        if binaries is None:
            raise PostgresUnavailable("PostgreSQL's initdb and postgres are not installed (apt-get install postgresql)")
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="lorapod-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0

    def _run_as(self) -> dict[str, str]:
        return {"user": "postgres", "group": "postgres"} if self._as_root else {}

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        log = self.root / "initdb.log"
        with log.open("wb") as output:
            subprocess.run(
                [str(self.binaries / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "--no-sync"],
                check=True, stdout=output, stderr=subprocess.STDOUT, **self._run_as(),  # type: ignore[call-overload]
            )  # fmt: skip
        server_log = (self.root / "server.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(self.binaries / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
            ],
            stdout=server_log, stderr=subprocess.STDOUT, **self._run_as(),  # type: ignore[call-overload]
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {(self.root / 'server.log').read_text()}") from None
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self, *, stub: bool = True) -> str:
        """A new, empty database (with the Supabase stubs unless ``stub`` is False); its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        if stub:
            execute_script(self.url(name), SUPABASE_STUB)
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def execute_script(url: str, sql: str) -> None:
    """Run a whole SQL script (it may hold its own BEGIN/COMMIT), as psql -f would."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)
