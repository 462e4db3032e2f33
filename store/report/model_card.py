"""The model card (README.md) that goes with an adapter or merged model pushed to the Hugging Face Hub.

Written from the job, as the client report is: the data and its checksum, the settings, the evaluation (each
result not measured says so) and the base model's licence notice, under the Hub's YAML metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.report import QUALITY_SECTIONS, environment
from store.report.data import JobReport

LLAMA_3_NOTICE = (
    "Built with Meta Llama 3. The base model's weights, and so this {what}, are subject to the Meta Llama 3 "
    "Community License (https://llama.meta.com/llama3/license/) and its Acceptable Use Policy; "
    "a redistribution must carry this notice and a copy of the licence."
)
DEMO_NOTICE = (
    "The base model is lorapod's demo model: a tiny, randomly initialised Llama built on this machine for tests. "
    "It has no licence terms of its own, and this {what} is not useful for anything but testing."
)


@dataclass(frozen=True)
class Licence:
    """The base model's licence as the Hub names it, and the notice a redistribution must carry."""

    id: str | None
    name: str | None
    link: str | None
    notice: str


def known_licence(base_model: str, *, merged: bool, hub_id: str | None = None, link: str | None = None) -> Licence:
    """The licence of ``base_model`` from what the Hub said (``hub_id``, ``link``) and what its name tells."""
    what = "merged model" if merged else "adapter"
    lowered = base_model.lower()
    if base_model.startswith("demo:"):
        return Licence(None, None, None, DEMO_NOTICE.format(what=what))
    if "llama-3" in lowered or "llama3" in lowered:
        return Licence(hub_id or "llama3", None if hub_id else "llama3", link, LLAMA_3_NOTICE.format(what=what))
    if hub_id:
        where = f" ({link})" if link else ""
        return Licence(hub_id, None, link, f"The {what} is subject to the base model's licence, {hub_id}{where}.")
    return Licence(
        None, None, None,
        f"The base model's licence could not be read; the {what} is subject to whatever licence {base_model} has: "
        "check it before you share this.",
    )  # fmt: skip


def model_card(job: JobReport, *, repo_id: str, merged: bool, licence: Licence) -> str:
    """README.md for ``repo_id``: the Hub's metadata block, then the card."""
    return (
        environment()
        .get_template("model_card.md.j2")
        .render(
            job=job,
            repo_id=repo_id,
            merged=merged,
            base_model=job.spec.base_model,
            licence=licence,
            quality_sections=QUALITY_SECTIONS,
        )
    )
