"""What can go wrong with RunPod, each with a message that says what to do (never the API key)."""

from __future__ import annotations

from remote.provider import ProviderError


class RunPodError(ProviderError):
    """RunPod's API refused a request or could not be reached."""


class BadApiKey(RunPodError):
    """The API key is missing, wrong or lacks the permission asked for."""


class NoCapacity(RunPodError):
    """None of the GPU types asked for has a machine free."""

    def __init__(self, tried: list[str], cloud_type: str, gpu_count: int, details: str = "") -> None:
        names = ", ".join(tried)
        super().__init__(
            f"no {cloud_type} capacity for {gpu_count}× any of the GPU types tried, in priority order: {names}"
            f"{f' ({details})' if details else ''}. Add GPU types (--set gpu_types=…), try the other cloud "
            "(--set cloud_type=COMMUNITY), or try again later"
        )
        self.tried = tried


class BalanceTooLow(RunPodError):
    """The account's balance or quota does not allow another pod."""


class RateLimited(RunPodError):
    """RunPod kept answering 429 after backing off."""


class PodNotFound(RunPodError):
    """The pod does not exist (any more)."""


class PodStartFailed(RunPodError):
    """A pod that did not become reachable; the message carries its last log lines where they could be read."""


class TransportError(ProviderError):
    """A pod that cannot be reached over SSH or its HTTP port right now."""


class HostKeyChanged(TransportError):
    """The pod's SSH host key differs from the one pinned on first use: the connection is refused."""


class PodJobFailed(TransportError):
    """The pod answers, but its job process has failed (the entrypoint says so): it will not start."""


class SecretsRefused(RunPodError):
    """The pod would not take this attempt's secrets: someone else used its bootstrap token first, or the place
    they go is not memory. The pod is not trusted with them and is deleted."""


class JobDoesNotFit(ProviderError):
    """The job cannot run on the pod it would rent (disk, network volume, GPU memory): refused before renting."""
