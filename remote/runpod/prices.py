"""GPU prices: RunPod's read-only GPU price query (the one the runpod SDK's ``get_gpu`` sends), cached, and the
rate a pod is expected to bill until RunPod reports its own.

The query goes to RunPod's GraphQL endpoint with the GPU ids as variables — never pasted into the query text,
which is how the SDK breaks on a quote — and the answer is cached under the cache dir for a day, where
``store.costs.gpu_price`` reads it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from engine.config import JobSpec
from remote.provider import ProviderError
from remote.runpod.client import TIMEOUT, ApiKey
from remote.runpod.errors import BadApiKey, RunPodError
from store.costs import LivePrices, find_gpu, gpu_price, live_prices, write_live_prices
from store.errors import CostError
from store.settings import Settings

log = logging.getLogger(__name__)

PRICE_QUERY = """
query GpuPrices($input: GpuTypeFilter) {
  gpuTypes(input: $input) { id displayName securePrice communityPrice }
}
"""
REFRESH_HOURS = 6.0


def fetch_prices(
    graphql_url: str, api_key: str, gpu_ids: list[str], *, transport: httpx.BaseTransport | None = None
) -> dict[str, dict[str, float]]:
    """{gpu id: {"secure": usd, "community": usd}} per GPU-hour, for the GPU ids asked (all when empty)."""
    auth = ApiKey(api_key)
    # One GPU: the SDK's get_gpu query for it. Several: one query for every type, then only those kept.
    variables = {"input": {"id": gpu_ids[0]}} if len(gpu_ids) == 1 else {}
    with httpx.Client(auth=auth, timeout=TIMEOUT, transport=transport) as http:
        try:
            response = http.post(graphql_url, json={"query": PRICE_QUERY, "variables": variables})
        except httpx.HTTPError as exc:
            raise RunPodError(f"cannot reach RunPod's price query: {type(exc).__name__}") from None
    if response.status_code in (401, 403):
        raise BadApiKey("RunPod refused the API key for the GPU price query")
    if response.status_code >= 400:
        raise RunPodError(f"RunPod's price query answered HTTP {response.status_code}")
    return {
        str(gpu["id"]): {
            "secure": float(gpu.get("securePrice") or 0.0),
            "community": float(gpu.get("communityPrice") or 0.0),
        }
        for gpu in _gpu_types(response, auth)
        if not gpu_ids or gpu["id"] in gpu_ids
    }


def _gpu_types(response: httpx.Response, auth: ApiKey) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        raise RunPodError("RunPod's price query did not answer JSON") from None
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        raise RunPodError(f"RunPod's price query failed: {auth.scrub(str(errors[0].get('message', errors[0])))}")
    found = (body.get("data") or {}).get("gpuTypes") if isinstance(body, dict) else None
    return [gpu for gpu in found or [] if isinstance(gpu, dict) and gpu.get("id")]


def refresh_prices(
    cache_dir: Path,
    graphql_url: str,
    api_key: str,
    gpu_ids: list[str],
    *,
    transport: httpx.BaseTransport | None = None,
) -> LivePrices | None:
    """The cached prices, fetched again when older than REFRESH_HOURS; None when RunPod cannot be asked."""
    cached = live_prices(cache_dir, max_age_hours=REFRESH_HOURS)
    if cached is not None and all(gpu in cached.prices for gpu in gpu_ids):
        return cached
    try:
        fetched = fetch_prices(graphql_url, api_key, gpu_ids, transport=transport)
    except RunPodError as exc:
        log.warning("GPU prices not refreshed (%s); the cost model uses the last prices it has", exc)
        return live_prices(cache_dir)
    if cached is not None:
        fetched = {**cached.prices, **fetched}
    return write_live_prices(cache_dir, fetched)


def estimated_rate(spec: JobSpec, settings: Settings, gpu: str | None = None) -> float:
    """USD per hour of a pod for ``spec`` by the cost model: ``gpu`` (the GPU rented) when the model knows it,
    else the first of the spec's priority list.

    ProviderError when it knows neither: an unknown rate is never taken for $0/h, which would hide the pod's
    cost from the ledger and the budget.
    """
    resources = spec.resources
    problem: CostError | None = None
    for name in dict.fromkeys(n for n in (gpu, resources.gpu_types[0]) if n):
        try:
            price, _ = gpu_price(find_gpu(name), resources.cloud_type.value, settings)
        except CostError as exc:
            problem = problem or exc
            continue
        return price * resources.gpu_count
    raise ProviderError(
        f"cannot tell what a pod would cost per hour ({problem}); lorapod launches no pod it cannot cost"
    )
