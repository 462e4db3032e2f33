"""RunPod: jobs on GPU pods, over RunPod's REST API, with the pod reached over SSH or its HTTP port.

Modules: ``client`` (the REST API: typed errors, a call budget, backoff), ``prices`` (the GPU price query,
cached for the cost model, and a pod's estimated rate), ``pods`` (names, the create request, pod records),
``transport`` (the interface, event feeds, failover), ``ssh`` and ``http`` (the two transports), ``links`` (one
link per pod) and ``tokens`` (pod API tokens, kept on this machine), ``provider`` (``RunPodProvider``).

Exceptions::

    ProviderError (remote.provider)
    ├── RunPodError          RunPod's API refused a request or could not be reached
    │   ├── BadApiKey        a missing or wrong key, or one without the permission asked for
    │   ├── NoCapacity       no machine free for any GPU type tried (it names them, in order)
    │   ├── BalanceTooLow    the balance or quota allows no other pod
    │   ├── RateLimited      still HTTP 429 after backing off
    │   ├── PodNotFound      the pod is gone
    │   └── PodStartFailed   a pod that did not become reachable (with its last log lines where readable)
    └── TransportError       the pod cannot be reached over SSH or HTTP right now
        ├── HostKeyChanged   the pod's SSH host key differs from the one pinned: refused
        └── PodJobFailed     the pod answers, but its job process has failed (it will not start)
"""

from remote.runpod.errors import (
    BadApiKey,
    BalanceTooLow,
    HostKeyChanged,
    NoCapacity,
    PodJobFailed,
    PodNotFound,
    PodStartFailed,
    RateLimited,
    RunPodError,
    TransportError,
)
from remote.runpod.provider import RunPodProvider

__all__ = [
    "BadApiKey",
    "BalanceTooLow",
    "HostKeyChanged",
    "NoCapacity",
    "PodJobFailed",
    "PodNotFound",
    "PodStartFailed",
    "RateLimited",
    "RunPodError",
    "RunPodProvider",
    "TransportError",
]
