"""A stand-in for RunPod: its REST API (validated against the published OpenAPI spec), the price query, the
HTTPS proxy, and pods that are local processes running the real pod entrypoint with a real sshd."""

from tests.standins.runpod.pods import StandInPod
from tests.standins.runpod.server import SPEC, RunPodStandIn

__all__ = ["SPEC", "RunPodStandIn", "StandInPod"]
