"""Whether the Hugging Face token lorapod is handed can write: it should be a fine-grained, read-only token.

A job only downloads from the Hub, so a token that can write (a classic "write" token, or a fine-grained one
with any write or manage permission) opens the user's repositories to whoever reads it in a pod. The Hub's
``/api/whoami-v2`` says what a token may do (``auth.accessToken``): ``role`` is read, write or fineGrained,
and a fine-grained token lists its permissions in ``fineGrained.global`` and ``fineGrained.scoped[].permissions``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from store.settings import Settings

log = logging.getLogger(__name__)

# Permissions that change nothing of the user's: calling inference endpoints and providers.
_HARMLESS_WRITE_PREFIXES = ("inference.",)
_checked: dict[str, str | None] = {}
DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def write_permissions(access: dict[str, Any]) -> list[str]:
    """What ``access`` (whoami-v2's ``auth.accessToken``) lets a token write; empty for a read-only token."""
    role = str(access.get("role") or "")
    if role in ("write", "admin"):
        return [f"role {role}"]
    fine = access.get("fineGrained")
    if role != "fineGrained" or not isinstance(fine, dict):
        return []
    granted = [str(p) for p in fine.get("global") or []]
    for scope in fine.get("scoped") or []:
        if isinstance(scope, dict):
            entity = scope.get("entity")
            name = (entity.get("name") or entity.get("type") if isinstance(entity, dict) else None) or "?"
            granted += [f"{p} on {name}" for p in scope.get("permissions") or []]
    writing = [p for p in granted if p.split(" ", 1)[0].rsplit(".", 1)[-1] in ("write", "manage")]
    return [p for p in writing if not p.startswith(_HARMLESS_WRITE_PREFIXES)]


def hf_token_warning(settings: Settings, *, endpoint: str | None = None) -> str | None:
    """A warning when the configured HF token can write; None when it is read-only, unset or cannot be checked
    (offline, or the Hub unreachable: nothing is refused for that). Asked once per token and process, with a
    short timeout, at ``HF_ENDPOINT`` as huggingface_hub reads it."""
    if settings.hf_token is None or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return None
    token = settings.hf_token.get_secret_value()
    if token in _checked:
        return _checked[token]
    base = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    try:
        response = httpx.get(f"{base}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        response.raise_for_status()
        info = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.info("could not ask the Hub what the HF token may do (%s)", type(exc).__name__)
        return None
    auth = info.get("auth") if isinstance(info, dict) else None
    access = auth.get("accessToken") if isinstance(auth, dict) else None
    writing = write_permissions(access) if isinstance(access, dict) else []
    warning = None
    if writing:
        warning = (
            f"HF_TOKEN can write ({', '.join(writing[:5])}): a job only reads from the Hub; create a fine-grained "
            "token with read access to the models it needs (huggingface.co/settings/tokens) and use that instead"
        )
    _checked[token] = warning
    return warning


def warn_if_hf_token_writes(settings: Settings) -> None:
    warning = hf_token_warning(settings)
    if warning:
        log.warning("%s", warning)
