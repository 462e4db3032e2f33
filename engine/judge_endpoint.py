"""A judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Together, a local server),
called from the user's machine with a key read from the environment.

The client speaks the published API — ``POST {judge_url}/chat/completions`` with ``model``, ``messages`` and
``temperature`` 0, the reply in ``choices[0].message.content`` — with httpx. The key goes in the
``Authorization`` header only; no message, record or error ever carries it.
"""

from __future__ import annotations

import os

import httpx

from engine import EngineError
from engine.chat import Message


class JudgeError(EngineError):
    """A judge endpoint that cannot be reached, refuses, or answers outside the API."""


class EndpointJudge:
    """Answers batches of judge prompts through one OpenAI-compatible endpoint."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key_env: str = "JUDGE_API_KEY",
        max_tokens: int = 256,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise JudgeError(f"judge_url: {url!r} is not an http(s) URL (e.g. https://api.openai.com/v1)")
        if not model:
            raise JudgeError("judge_model: required with judge_url (the endpoint's model name)")
        key = os.environ.get(api_key_env) if api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __call__(self, chats: list[list[Message]]) -> list[str]:
        return [self.answer(chat) for chat in chats]

    def answer(self, chat: list[Message]) -> str:
        """The endpoint's reply to one chat (its text; an empty reply is a verdict the summary counts unparsed)."""
        body = {"model": self.model, "messages": chat, "temperature": 0, "max_tokens": self.max_tokens}
        try:
            response = self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise JudgeError(f"judge endpoint {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (401, 403):
            raise JudgeError(f"judge endpoint {self.url} refused the key (HTTP {response.status_code})")
        if response.status_code >= 400:
            raise JudgeError(f"judge endpoint {self.url}: HTTP {response.status_code}: {response.text[:300]}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(
                f"judge endpoint {self.url}: not a chat-completions answer: {response.text[:300]}"
            ) from None
        return content if isinstance(content, str) else ""

    def close(self) -> None:
        self._client.close()

    def describe(self) -> str:
        return f"{self.model} at {self.url}"
