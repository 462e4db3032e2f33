"""The pairwise judge: base reply against adapter reply on every held-out prompt, by a rubric, in both orders.

Each pair is shown to the judge twice — base as A and adapter as B, then swapped — and the judge answers
every criterion (and ``overall``) with A, B or tie, as one JSON object. A criterion counts as a win or a loss
only when both orders agree; a preference that follows the position rather than the reply becomes a tie,
which is what cancels position bias. A verdict that cannot be read (no JSON object, a missing criterion, an
answer other than A, B or tie) is counted as unparsed, never guessed.

The judge itself is any callable that answers a batch of chat prompts: the base model on the pod
(engine.evaluation) or an OpenAI-compatible endpoint (engine.judge_endpoint).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.chat import Message
from engine.preference import Tally

OVERALL = "overall"
GROUP_KEYS = ("persona", "emotional_arc", "topic")
# The conversation shown to the judge: the system prompt and the last turns (a 70B judge reading a whole
# long conversation twice per pair would cost more than the answers it judges).
CONTEXT_TURNS = 6
SELF_JUDGE_NOTE = "judged by the base model itself: a model judging its own replies against its fine-tune may be biased"
Ask = Callable[[list[list[Message]]], list[str]]

_INSTRUCTIONS = """You compare two replies, A and B, that an assistant could give next in the conversation below.
Answer each question with "A", "B" or "tie" (tie when neither is better). Judge the replies, not their order
or length.

Questions:
{questions}

Answer with one JSON object and nothing else, e.g. {example}"""


def visible_context(prompt: Sequence[Message]) -> list[Message]:
    """What a judge or a rater sees of a conversation: its system prompt and its last CONTEXT_TURNS turns."""
    system = [m for m in prompt if m["role"] == "system"][:1]
    return system + [m for m in prompt if m["role"] != "system"][-CONTEXT_TURNS:]


def judge_messages(prompt: Sequence[Message], first: str, second: str, criteria: Mapping[str, str]) -> list[Message]:
    """The chat the judge answers: the rubric, the conversation so far, and the two replies as A and B."""
    questions = {**criteria, OVERALL: "Overall, which reply is better for this person?"}
    labels = {"system": "system prompt: the assistant's persona"}
    conversation = "\n\n".join(
        f"[{labels.get(m['role'], m['role'])}]\n{m['content'].strip()}" for m in visible_context(prompt)
    )
    instructions = _INSTRUCTIONS.format(
        questions="\n".join(f"- {name}: {question}" for name, question in questions.items()),
        example=json.dumps(dict.fromkeys(questions, "A")),
    )
    body = f"{conversation}\n\n[reply A]\n{first.strip()}\n\n[reply B]\n{second.strip()}"
    return [{"role": "system", "content": instructions}, {"role": "user", "content": body}]


def parse_verdict(text: str, names: Sequence[str]) -> dict[str, str | None]:
    """Each criterion's answer, "A", "B" or "tie"; None where the text gives no readable answer for it."""
    found: dict[str, Any] = {}
    for match in re.finditer(r"\{[^{}]*\}", text):
        try:
            candidate = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(candidate, dict):
            found = candidate
            break
    answers: dict[str, str | None] = {}
    for name in names:
        value = found.get(name)
        normal = value.strip().lower() if isinstance(value, str) else None
        answers[name] = {"a": "A", "b": "B", "tie": "tie"}.get(normal or "")
    return answers


def combine(base_first: str | None, adapter_first: str | None) -> str | None:
    """The outcome for the adapter from the two orders' answers (A/B/tie each); None when either is unread."""
    if base_first is None or adapter_first is None:
        return None
    first = {"A": "loss", "B": "win", "tie": "tie"}[base_first]
    second = {"A": "win", "B": "loss", "tie": "tie"}[adapter_first]
    return first if first == second else "tie"


def judge_pairs(
    pairs: Sequence[Mapping[str, Any]],
    criteria: Mapping[str, str],
    ask: Ask,
    *,
    judge: str,
    bounded_from: int | None = None,
    stop: Callable[[], bool] = lambda: False,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Judge every pair ({prompt, base, adapter, meta}); the ``judge`` section of eval.json.

    ``bounded_from`` is the number of held-out prompts there were when eval_max_prompts kept fewer.
    """
    names = [*criteria, OVERALL]
    records: list[dict[str, Any]] = []
    for start in range(0, len(pairs), batch_size):
        if stop():
            break
        chunk = pairs[start : start + batch_size]
        chats = []
        for pair in chunk:
            chats.append(judge_messages(pair["prompt"], pair["base"], pair["adapter"], criteria))
            chats.append(judge_messages(pair["prompt"], pair["adapter"], pair["base"], criteria))
        answers = ask(chats)
        for offset, pair in enumerate(chunk):
            index = start + offset
            for order, chat, raw in (
                ("base_first", chats[2 * offset], answers[2 * offset]),
                ("adapter_first", chats[2 * offset + 1], answers[2 * offset + 1]),
            ):
                records.append(
                    {"pair": index, "order": order, "prompt": chat, "raw": raw, "meta": dict(pair.get("meta") or {})}
                )
    return summarize(records, names, judge=judge, pairs=len(pairs), bounded_from=bounded_from)


def summarize(
    records: Sequence[Mapping[str, Any]], names: Sequence[str], *, judge: str, pairs: int, bounded_from: int | None
) -> dict[str, Any]:
    """Tallies overall, per criterion and per persona/arc/topic from the raw verdict records."""
    by_pair: dict[int, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for record in records:
        by_pair[record["pair"]][record["order"]] = record
    overall = Tally()
    criteria: dict[str, Tally] = {name: Tally() for name in names if name != OVERALL}
    groups: dict[str, dict[str, Tally]] = defaultdict(lambda: defaultdict(Tally))
    for orders in by_pair.values():
        base_first = parse_verdict(orders["base_first"]["raw"], names) if "base_first" in orders else {}
        adapter_first = parse_verdict(orders["adapter_first"]["raw"], names) if "adapter_first" in orders else {}
        outcomes = {name: combine(base_first.get(name), adapter_first.get(name)) for name in names}
        overall.add(outcomes[OVERALL])
        for name, tally in criteria.items():
            tally.add(outcomes[name])
        meta = next(iter(orders.values())).get("meta") or {}
        for key in GROUP_KEYS:
            if meta.get(key):
                groups[key][str(meta[key])].add(outcomes[OVERALL])
    return {
        **overall.summary(),
        "judge": judge,
        "note": SELF_JUDGE_NOTE if judge == "base model" else None,
        "pairs": pairs,
        "judged": len(by_pair),
        "bounded": {"judged": pairs, "held_out": bounded_from} if bounded_from else None,
        "by_criterion": {name: tally.summary() for name, tally in criteria.items()},
        "by_group": {key: {value: t.summary() for value, t in values.items()} for key, values in groups.items()},
        "records": list(records),
    }
