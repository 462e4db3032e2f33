"""The Llama 3 chat format: special tokens, the template, and rendering with the spans a model must learn.

``render`` produces exactly the text of Meta's Llama 3 Instruct chat template (contents trimmed, one
``<|begin_of_text|>``), and for each assistant turn the character span that is trained: its content and
the ``<|eot_id|>`` after it — the token that teaches the model to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
SPECIAL_TOKENS = [BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, EOT]
ROLES = ("system", "user", "assistant")

# Meta's Llama 3 Instruct template, with the assistant part inside {% generation %} so Hugging Face tools
# (TRL's assistant_only_loss, return_assistant_tokens_mask) see which tokens are trained.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- generation %}{{- message['content'] | trim }}{{- '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


class Message(TypedDict):
    role: str
    content: str


def header(role: str) -> str:
    return f"{START_HEADER}{role}{END_HEADER}\n\n"


@dataclass(frozen=True)
class Rendered:
    text: str
    trained_spans: list[tuple[int, int]]  # [start, end) character ranges: assistant content + <|eot_id|>


def render(messages: Sequence[Message], *, add_generation_prompt: bool = False) -> Rendered:
    """The Llama 3 text of ``messages``, and the character spans that assistant-only loss trains."""
    parts = [BEGIN_OF_TEXT]
    length = len(BEGIN_OF_TEXT)
    spans: list[tuple[int, int]] = []
    for message in messages:
        head = header(message["role"])
        body = message["content"].strip() + EOT
        if message["role"] == "assistant":
            start = length + len(head)
            spans.append((start, start + len(body)))
        parts += [head, body]
        length += len(head) + len(body)
    if add_generation_prompt:
        parts.append(header("assistant"))
    return Rendered("".join(parts), spans)
