"""The playground's model server: one process holds a job's base model and adapter, and streams replies from
either, so the same prompt can be put to both and the replies read side by side.

``python -m engine playground --workdir DIR`` serves the job in DIR (its spec.json and adapter/) on this
machine: the dashboard and ``lorapod chat`` start it as a subprocess, so they never import torch. In a pod,
``python -m engine pod`` serves it in place of a job when ``LORAPOD_PLAYGROUND=1``. One model serves both
sides: the base's replies come from it with the adapter disabled. Replies are greedy, so a prompt asked twice
gets the same reply.

Routes (all but ``/health`` need ``Authorization: Bearer <LORAPOD_POD_TOKEN>``)::

    GET  /health  {"ok": true, "playground": true, "base_model": …, "busy": false, "idle_s": 12.5}
    POST /chat    {"messages": [{"role", "content"}…], "side": "base" | "adapter", "max_new_tokens": N}
                  → newline-delimited JSON: {"text": "…"} per piece as it is generated, then
                    {"done": true, "tokens": N, "first_token_s": s, "seconds": s}
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel, Field

from engine import EngineError
from engine.chat import EOT, Message, render
from engine.config import JobSpec
from engine.serve import _SHA256, TOKEN_SHA256_VARIABLE, TOKEN_VARIABLE, _BearerAuth, _ignore, bearer_digest
from engine.workdir import Workdir

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("engine.playground")

DEFAULT_MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS = 2048
READY_PREFIX = "lorapod-playground ready "  # then a JSON object: what a parent process waits for on stdout


class PlaygroundError(EngineError):
    """The playground cannot serve this job (no adapter yet, an unreadable spec)."""


class Replier:
    """A base model with a job's adapter on it; replies from either side, one generation at a time."""

    def __init__(self, model: PeftModel, tokenizer: PreTrainedTokenizerBase, device: str, base_model: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.base_model = base_model
        self._lock = threading.Lock()  # one model: the adapter is switched off for the base, never for two at once
        self.busy = 0  # replies under way (or waiting for the model)
        self._busy_lock = threading.Lock()
        self.last_active = time.monotonic()

    @classmethod
    def load(cls, workdir: Path, models_dir: Path) -> Replier:
        """The model and adapter of the finished job in ``workdir``, its base resolved as its engine did."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from engine.model import device, load_tokenizer, resolve_base_model

        work = Workdir(workdir)
        if not (work.adapter / "adapter_model.safetensors").is_file():
            raise PlaygroundError(f"{work.adapter} holds no trained adapter: the job has not finished training")
        try:
            spec = JobSpec.model_validate_json(work.spec.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PlaygroundError(f"{work.spec}: the job's spec cannot be read ({type(exc).__name__})") from None
        token = os.environ.get("HF_TOKEN") or None
        path = resolve_base_model(spec.base_model, models_dir)
        where = device()
        hp = spec.hyperparameters
        dtype = torch.bfloat16 if hp.bf16 and where == "cuda" else torch.float32
        kwargs: dict[str, Any] = {"dtype": dtype, "token": token, "device_map": {"": where}}
        if hp.load_in_4bit and where == "cuda":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=hp.bnb_4bit_quant_type,
                bnb_4bit_use_double_quant=hp.bnb_4bit_use_double_quant, bnb_4bit_compute_dtype=dtype,
            )  # fmt: skip
        base = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        model = PeftModel.from_pretrained(base, str(work.adapter))
        model.eval()
        tokenizer = load_tokenizer(str(work.adapter) if (work.adapter / "tokenizer.json").exists() else path, token)
        log.info("playground: %s with the adapter of %s on %s", spec.base_model, work.root, where)
        return cls(model, tokenizer, where, spec.base_model)

    def stream(self, messages: list[Message], *, adapter: bool, max_new_tokens: int) -> Iterator[dict[str, Any]]:
        """The reply's pieces as they are generated ({"text"}), then a summary ({"done", "tokens", …})."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> bool:
                return stop.is_set()  # the client went away: no need to finish its reply

        tokenizer = self.tokenizer
        text = render(messages, add_generation_prompt=True).text
        inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(self.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        result: dict[str, Any] = {}

        def generate() -> None:
            try:
                context = nullcontext() if adapter else self.model.disable_adapter()
                with context, torch.no_grad():
                    out = self.model.generate(
                        **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                        eos_token_id=tokenizer.convert_tokens_to_ids(EOT), pad_token_id=tokenizer.pad_token_id,
                        streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stop()]),
                    )  # fmt: skip
                result["tokens"] = int(out.shape[1] - inputs["input_ids"].shape[1])
            except Exception as exc:  # reported to the client as the reply's last line
                result["error"] = f"{type(exc).__name__}: {exc}"
                streamer.end()

        with self._busy_lock:
            self.busy += 1
        try:
            yield from self._generate(generate, streamer, stop, result)
        finally:
            with self._busy_lock:
                self.busy -= 1
                self.last_active = time.monotonic()

    def _generate(
        self, generate: Callable[[], None], streamer: Any, stop: threading.Event, result: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        with self._lock:
            started = time.perf_counter()
            first: float | None = None
            worker = threading.Thread(target=generate, name="playground-generate", daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    if piece:
                        first = first if first is not None else time.perf_counter() - started
                        yield {"text": piece}
            finally:
                stop.set()
                worker.join()
        if "error" in result:
            yield {"done": True, "error": result["error"]}
            return
        seconds = time.perf_counter() - started
        yield {"done": True, "tokens": result.get("tokens", 0), "first_token_s": first, "seconds": seconds}


class ChatBody(BaseModel):
    messages: list[dict[str, str]] = Field(min_length=1, description="the conversation, ending with a user turn")
    side: Literal["base", "adapter"]
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS)


def create_app(replier: Replier, digest: str) -> FastAPI:
    """The playground API over ``replier``; requests must carry the bearer token whose sha256 is ``digest``."""
    if not _SHA256.fullmatch(digest):
        raise ValueError("the playground needs its token's sha256")
    off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    app = FastAPI(title="lorapod playground", docs_url=None, redoc_url=None, openapi_url=None, telemetry=off)
    app.add_middleware(_BearerAuth, token_sha256=digest)

    def health() -> dict[str, Any]:
        # busy and idle_s: whoever deletes an idle playground asks first, so a long reply is never cut off.
        idle = 0.0 if replier.busy else time.monotonic() - replier.last_active
        return {"ok": True, "playground": True, "base_model": replier.base_model, "busy": bool(replier.busy),
                "idle_s": round(idle, 1)}  # fmt: skip

    def chat(body: ChatBody) -> StreamingResponse:
        messages: list[Message] = [
            {"role": m.get("role", "user"), "content": m.get("content", "")} for m in body.messages
        ]
        lines = (
            json.dumps(item) + "\n"
            for item in replier.stream(messages, adapter=body.side == "adapter", max_new_tokens=body.max_new_tokens)
        )
        return StreamingResponse(lines, media_type="application/x-ndjson", headers={"Cache-Control": "no-cache"})

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/chat", chat, methods=["POST"])
    return app


def serve(replier: Replier, digest: str, sock: socket.socket) -> int:
    """Serve on the bound socket ``sock`` until SIGTERM or Ctrl-C."""
    import signal

    import uvicorn

    config = uvicorn.Config(
        create_app(replier, digest), log_level="warning", server_header=False, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def main(workdir: Path, *, models_dir: Path | None, host: str, port: int) -> int:
    """``python -m engine playground``: load the job's model, say where it listens on stdout, serve it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Here the token itself; on a pod only its sha256, which opens nothing to whoever reads the pod's env.
    digest = bearer_digest()
    if digest is None:
        print(
            f"error: neither {TOKEN_VARIABLE} nor {TOKEN_SHA256_VARIABLE} is set; the playground refuses to serve "
            "without a token",
            file=sys.stderr,
        )
        return 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        replier = Replier.load(workdir, models_dir or workdir / "models")
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sock = bind(host, port)
    ready = {"host": host, "port": sock.getsockname()[1], "base_model": replier.base_model}
    print(READY_PREFIX + json.dumps(ready), flush=True)
    return serve(replier, digest, sock)


def pod_main() -> int:
    """In a playground pod: serve the job's adapter on the pod API's port. The adapter is on the network volume,
    or, for a job that ran without one, arrives as its adapter package in ``inputs/`` (LORAPOD_AWAIT_INPUT) with
    the spec in LORAPOD_SPEC; the HF token to download the base model arrives with the pod's secrets. The pod's
    watchdog deletes it after LORAPOD_MAX_SECONDS, should the supervisor that deletes it when idle be gone."""
    from engine.pod import PodConfig, PodJob
    from engine.pod_secrets import SecretsError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = PodConfig.from_env()
    job = PodJob(config)
    work = job.workdir
    (work.root / "control").mkdir(parents=True, exist_ok=True)
    work.pod_pid.write_text(str(os.getpid()))  # what a launcher checks over SSH: the pod's process lives
    if config.max_seconds:
        timer = threading.Timer(config.max_seconds, lambda: job.delete_pod("the playground's watchdog"))
        timer.daemon = True
        timer.start()
    try:
        if config.await_input:
            job.wait_for_input()
            unpack_package(work.inputs / config.await_input, work, os.environ.get("LORAPOD_SPEC", ""))
        os.environ.update(job.receive_secrets())  # HF_TOKEN for a gated base model; this process alone loads it
    except (PlaygroundError, SecretsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    models = Path(os.environ.get("LORAPOD_MODELS_DIR") or config.workspace / "lorapod" / "models")
    return main(work.root, models_dir=models, host="0.0.0.0", port=config.api_port)


def unpack_package(package: Path, work: Workdir, spec_json: str) -> None:
    """A job's adapter package (its ``adapter/`` folder) and its spec, laid out as the job's workdir holds them."""
    import zipfile

    try:
        spec = JobSpec.model_validate_json(spec_json)
    except ValueError:
        raise PlaygroundError(
            "LORAPOD_SPEC holds no valid job spec: the playground cannot tell the base model"
        ) from None
    try:
        with zipfile.ZipFile(package) as archive:
            names = [n for n in archive.namelist() if n.startswith("adapter/") and not n.endswith("/")]
            if "adapter/adapter_config.json" not in names:
                raise PlaygroundError(f"{package.name}: no adapter/adapter_config.json inside")
            work.adapter.mkdir(parents=True, exist_ok=True)
            for name in names:
                (work.adapter / Path(name).name).write_bytes(archive.read(name))
    except (OSError, zipfile.BadZipFile) as exc:
        raise PlaygroundError(f"{package}: the adapter package cannot be read ({exc})") from None
    work.spec.write_text(spec.model_dump_json(), encoding="utf-8")
