"""Normalised in-memory records: conversations of pairs as read from any format, and the examples built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.chat import Message
from engine.config import DatasetFormat


class ExampleMessage(Message, total=False):
    """A chat message; ``weight: 0`` on an assistant message makes it context only (OpenAI's convention)."""

    weight: int


@dataclass(slots=True)
class Turn:
    role: str
    content: str


@dataclass(slots=True)
class Pair:
    """One training pair: the context a reply was written for, and the reply (None: a user turn, no reply)."""

    index: int  # position in its conversation
    id: str
    system_prompt: str
    history: list[Turn]
    user_input: str | None
    target: str | None
    turn_number: int | None = None
    quality_score: float | None = None
    line: int | None = None  # the line it was read from (JSONL formats)
    # Where the reply and the user's input live when not in target_response / current_user_input (chat JSONL).
    target_field: str = "target_response"
    input_field: str = "current_user_input"


@dataclass(slots=True)
class Conversation:
    index: int  # position in the file
    id: str  # conversation_metadata.conversation_id, or "#<index>" when the file has none
    pairs: list[Pair]
    persona: str | None = None
    emotional_arc: str | None = None
    topic: str | None = None
    line: int | None = None
    has_id: bool = True  # False when the id is the index fallback

    def strata(self) -> dict[str, str]:
        """The metadata the held-out split balances: persona, emotional arc and topic, where known."""
        values = {"persona": self.persona, "emotional_arc": self.emotional_arc, "topic": self.topic}
        return {key: value for key, value in values.items() if value}


@dataclass(slots=True)
class Dataset:
    path: Path
    format: DatasetFormat
    conversations: list[Conversation]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs(self) -> int:
        return sum(len(c.pairs) for c in self.conversations)


@dataclass(slots=True)
class Example:
    """One training example: chat messages (context-only assistant turns carry ``weight: 0``) and where it came from.

    ``meta`` holds conversation_id, conversation_index, persona, emotional_arc, topic, pair_ids (one per trained
    assistant turn, in order), window ({"index", "of"}, 1-based), tokens and trained_tokens.
    """

    messages: list[ExampleMessage]
    meta: dict[str, Any]

    def trained_turns(self) -> list[int]:
        """Indices of the assistant messages the loss is computed on."""
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "meta": self.meta}
