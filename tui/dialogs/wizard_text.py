"""Rich text the new-job wizard shows: an example as the model sees it, and the pod a RunPod launch would rent."""

from __future__ import annotations

from typing import Any

from rich.text import Text


def preview_text(preview: Any) -> Text:
    """The example as the model sees it; trained runs highlighted and underlined (so not by colour alone)."""
    text = Text()
    for segment in preview.segments:
        text.append(segment.text, style="bold underline green" if segment.trained else "dim")
    return text


def launch_text(launch: dict[str, Any]) -> Text:
    """What ``lorapod run --plan`` shows of the pod: image, GPU walk, disk, memory and what refuses it."""
    text = Text()
    if "create_request" in launch:
        stock = " (RunPod's image: lorapod installs itself at start)" if launch.get("stock_image") else ""
        text.append(f"pod image  {launch['image']}{stock}\n")
        walk = ", ".join(g["id"] + ("" if g["fits"] else " ✖ does not fit") for g in launch["gpu_types"])
        text.append(f"GPU types  {walk}\n")
        disk = launch["disk"]
        volume = disk["network_volume"]
        where = f"network volume {volume['id']} ({volume['size_gb']} GB)" if volume else f"{disk['volumeInGb']} GB"
        text.append(f"disk       needs {disk['needed_gb']} GB: {where}\n")
        memory = launch.get("gpu_memory")
        if memory:
            text.append(f"GPU memory about {memory['needed_gb']:g} GB per GPU\n")
        env = ", ".join(launch["create_request"]["env"])
        text.append(f"env names  {env}\n", style="dim")
    for problem in launch.get("problems", []):
        text.append(f"✖ refused: {problem}\n", style="bold red")
    return text
