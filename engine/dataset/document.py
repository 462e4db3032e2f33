"""A brightrun-lora-v4 document read conversation by conversation: each becomes records before the next is parsed."""

from __future__ import annotations

from typing import Any, BinaryIO

from engine.dataset.model import Conversation
from engine.dataset.readers import parse_error
from engine.dataset.report import Findings, Location
from engine.dataset.schema import read_conversation, wrong_conversations, wrong_top_level
from engine.dataset.stream import DocumentError, JsonStream
from engine.dataset.surrogates import check_conversation, check_value


def read_document(
    handle: BinaryIO, file: str, findings: Findings, *, check_text: bool
) -> tuple[list[Conversation], dict[str, Any]] | None:
    """The conversations, and the other top-level fields; None when the file is not valid JSON.

    A syntax error is then the only finding, as nothing of the file can be trusted. ``check_text``: look for
    unpaired surrogates (the file holds escapes that may be some).
    """
    found = Findings()
    try:
        read = _read(JsonStream(handle), file, found, check_text)
    except DocumentError as exc:
        parse_error(file, exc.error, findings, line=exc.line, column=exc.column)
        return None
    except RecursionError:
        findings.error("not_json", "the JSON nests too deeply to read", Location(file=file))
        return None
    findings.merge(found)
    return read


def _read(
    stream: JsonStream, file: str, findings: Findings, check_text: bool
) -> tuple[list[Conversation], dict[str, Any]]:
    if not stream.object_follows():
        data = stream.value()
        stream.finish()
        if check_text:
            check_value(data, Location(file=file), findings)
        wrong_top_level(data, file, findings)
        return [], {}
    texts: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    conversations: list[Conversation] | None = None
    for key in stream.members():
        items = stream.items() if key == "conversations" and conversations is None else None
        if items is not None:
            conversations = []
            for index, raw in enumerate(items):
                if check_text:
                    check_conversation(raw, index, findings)
                conversation = read_conversation(raw, index, findings, texts)
                if conversation is not None:
                    conversations.append(conversation)
            continue
        value = stream.value()
        if check_text:
            check_value(value, Location(file=file), findings, prefix=(key,))
        if key != "conversations":
            metadata[key] = value
        elif conversations is None:
            wrong_conversations(value, file, findings)
            conversations = []
        else:
            message = "'conversations' appears twice: the file must hold one list of them"
            findings.error("wrong_shape", message, Location(file=file, field="conversations"))
    stream.finish()
    if conversations is None:
        wrong_conversations(None, file, findings, missing=True)
        conversations = []
    return conversations, metadata
