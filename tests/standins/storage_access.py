"""Who may do what in the Storage stand-in, decided as Supabase Storage decides it: in PostgreSQL, by RLS.

Supabase's gateway wants a project key (anon or service role) in ``apikey``; Storage then verifies the bearer
JWT with the project's JWT secret and runs the request's SQL on ``storage.objects`` as the token's ``role``
with its claims in ``request.jwt.claims`` (``set local role`` + ``set_config``), so the policies of the
project's migrations decide: an insert they refuse is "new row violates row-level security policy", an
object they hide is not found. The service-role key runs as service_role, which bypasses RLS.
``as_caller`` runs any SQL that way: what the REST API (PostgREST) would do with the same token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jwt
import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Caller:
    role: str
    claims: dict[str, Any]


class StorageAccess:
    """The project's keys and JWT secret, and its database (with the storage schema and its policies)."""

    def __init__(self, database: str, *, jwt_secret: str, anon_key: str, service_key: str) -> None:
        self.database = database
        self.jwt_secret = jwt_secret
        self.anon_key = anon_key
        self.service_key = service_key
        self.writes: list[tuple[str, str | None, str, str]] = []  # role, job_id claim, bucket, key: each write made

    def identify(self, authorization: str, apikey: str) -> Caller | None:
        """The caller a request's headers name; None when the gateway or Storage would refuse them."""
        if apikey not in (self.anon_key, self.service_key):
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token == self.service_key:
            return Caller("service_role", {"role": "service_role"})
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], options={"require": ["exp", "role"]})
        except jwt.PyJWTError:
            return None
        return Caller(str(claims["role"]), dict(claims))

    @contextmanager
    def as_caller(self, caller: Caller, *, commit: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A transaction run as the caller's role with its claims, as Storage and PostgREST run one."""
        with psycopg.connect(self.database) as conn:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(caller.role)))
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(caller.claims),))
            yield conn
            if not commit:
                conn.rollback()

    def may_write(self, caller: Caller, bucket: str, key: str, *, upsert: bool, commit: bool = True) -> bool:
        """Insert (or upsert) the object's row as the caller; False when RLS or a grant refuses it."""
        with psycopg.connect(self.database) as conn:  # the bucket exists as the migrations made it, or is made
            conn.execute(
                "INSERT INTO storage.buckets (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (bucket, bucket)
            )
        statement = "INSERT INTO storage.objects (bucket_id, name, metadata) VALUES (%s, %s, '{}')"
        if upsert:
            statement += " ON CONFLICT (bucket_id, name) DO UPDATE SET metadata = excluded.metadata"
        try:
            with self.as_caller(caller, commit=commit) as conn:
                conn.execute(statement, (bucket, key))  # type: ignore[arg-type]
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UniqueViolation):
            return False
        if commit:
            self.writes.append((caller.role, caller.claims.get("job_id"), bucket, key))
        return True

    def may_read(self, caller: Caller, bucket: str, key: str) -> bool:
        try:
            with self.as_caller(caller) as conn:
                found = conn.execute(
                    "SELECT 1 FROM storage.objects WHERE bucket_id = %s AND name = %s", (bucket, key)
                ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return False
        return found is not None
