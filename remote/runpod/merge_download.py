"""The merge pod's API from this side: its state, and its files downloaded one by one, each resumed with an HTTP
Range request where a transfer was cut and checked against the pod's manifest (sha256) before it is kept."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from engine.checksums import sha256_file
from remote.exports import ExportError

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# In an output folder while a merge pod's files download into it: a folder holding it may be given again, and
# the download goes on there (the files already checked are kept, a cut one resumes).
PARTIAL_MARKER = ".lorapod-merge-download"
RETRIES = 5  # cut transfers resumed per file before the download gives up


class MergePodClient:
    """The merge pod's API at ``url`` (behind RunPod's proxy), or any httpx client pointed at it."""

    def __init__(self, url: str, token: str, *, http: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = http or httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(60.0, connect=10.0),
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def health(self) -> dict[str, Any] | None:
        """What /health says, or None while nothing answers there as a merge pod."""
        try:
            response = self._http.get("/health", timeout=5)
            found = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return found if isinstance(found, dict) and found.get("merge") else None

    def status(self) -> dict[str, Any] | None:
        """The merge's state, reason and manifest; None when the pod cannot be reached just now."""
        try:
            response = self._http.get("/merge", timeout=30)
            found = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def done(self, *, keep: bool) -> bool:
        """Tell the pod it may delete itself (and the merged files on the volume, unless ``keep``)."""
        try:
            return self._http.post("/merge/done", json={"keep": keep}, timeout=30).status_code == 200
        except httpx.HTTPError:
            return False

    def download(self, entry: dict[str, Any], target: Path, on_bytes: Callable[[int], None] | None = None) -> None:
        """Download one manifest ``entry`` ({"name", "size", "sha256"}) to ``target``: into ``<target>.part``,
        resumed from its length when a transfer is cut, renamed once its sha256 matches the manifest's."""
        name, size, sha256 = str(entry["name"]), int(entry["size"]), str(entry["sha256"])
        part = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and target.stat().st_size == size and sha256_file(target) == sha256:
            return  # downloaded and checked by an earlier run that was cut off later
        for attempt in range(RETRIES + 1):
            have = part.stat().st_size if part.exists() else 0
            if have > size:  # not this file's beginning: start again
                part.unlink()
                have = 0
            try:
                if have < size:
                    self._fetch(name, part, have, on_bytes)
            except (httpx.HTTPError, ExportError) as exc:
                if attempt == RETRIES:
                    raise ExportError(
                        f"downloading {name} from the merge pod failed {RETRIES + 1} times ({exc}); "
                        f"{part.stat().st_size if part.exists() else 0} of {size} bytes are in {part}: give the same "
                        "output folder again to go on where it stopped"
                    ) from None
                log.info("download of %s cut at %d bytes (%s): resuming", name, have, type(exc).__name__)
                time.sleep(min(2**attempt, 10))
                continue
            if sha256_file(part) == sha256:
                part.replace(target)
                return
            part.unlink()  # a resumed part that does not add up: fetched again whole
            if attempt == RETRIES:
                break
        raise ExportError(
            f"{name}: the downloaded file's sha256 does not match the merge pod's manifest; the merged files stay on "
            "the volume, and the next merge pod checks them again (give the same output folder to go on)"
        )

    def _fetch(self, name: str, part: Path, have: int, on_bytes: Callable[[int], None] | None) -> None:
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._http.stream("GET", f"/merge/files/{name}", headers=headers, timeout=60) as response:
            if response.status_code not in (200, 206):
                response.read()
                raise ExportError(f"the merge pod answered HTTP {response.status_code} for {name}")
            # 200 to a Range request: the whole file comes again, so the part starts over.
            mode = "ab" if response.status_code == 206 else "wb"
            with part.open(mode) as handle:
                for chunk in response.iter_bytes(CHUNK):
                    handle.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
