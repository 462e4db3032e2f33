"""``python -m engine``: run a job, build the demo model, serve the pod API or the playground, run a pod's job,
merge an adapter, or benchmark."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="lorapod's headless training engine")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one job described by a spec")
    run.add_argument("--spec", type=Path, help="JobSpec JSON file (default: $LORAPOD_SPEC holds the JSON)")
    run.add_argument("--workdir", type=Path, required=True, help="the job's working directory")
    run.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ["LORAPOD_MODELS_DIR"]) if os.environ.get("LORAPOD_MODELS_DIR") else None,
        help="where demo models are built (default: $LORAPOD_MODELS_DIR, else <workdir>/models)",
    )

    demo = commands.add_parser("demo-model", help="build the tiny offline demo model and tokenizer")
    demo.add_argument("dir", type=Path)
    demo.add_argument("--dataset", type=Path, default=None, help="text for the tokenizer (default: the sample)")

    serve = commands.add_parser("serve", help="the pod API: status, events, logs, cancel, artifacts")
    serve.add_argument("--workdir", type=Path, required=True)
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="0.0.0.0")

    play = commands.add_parser("playground", help="serve a job's base model and adapter for side-by-side replies")
    play.add_argument("--workdir", type=Path, required=True, help="the finished job's workdir (spec.json, adapter/)")
    play.add_argument(
        "--models-dir", type=Path, default=None, help="where the demo model is (default: <workdir>/models)"
    )
    play.add_argument("--port", type=int, default=0, help="0: any free port (the ready line on stdout says which)")
    play.add_argument("--host", default="127.0.0.1")

    commands.add_parser(
        "pod",
        help="inside a RunPod pod: serve, run the job from $LORAPOD_SPEC, delete the pod (with "
        "LORAPOD_PLAYGROUND=1: serve the finished job's playground; with LORAPOD_MERGE=1: merge its adapter)",
    )

    merge = commands.add_parser("merge", help="merge an adapter into its base model: bf16 safetensors")
    merge.add_argument("--adapter", type=Path, required=True, help="the adapter folder (adapter_config.json)")
    merge.add_argument("--base", required=True, help="the base model: Hub id, local path or demo:tiny-llama")
    merge.add_argument("--out", type=Path, required=True, help="folder for the merged model")
    merge.add_argument("--models-dir", type=Path, default=None, help="where the demo model is (or is built)")

    bench = commands.add_parser("bench", help="QLoRA throughput with Llama-3-70B layer shapes")
    from engine.bench import add_arguments

    add_arguments(bench)
    return parser


def _pod() -> int:
    """In a pod: its job's whole life, or with LORAPOD_PLAYGROUND=1 the finished job's playground, or with
    LORAPOD_MERGE=1 the finished job's adapter merged into its base model and served for download."""
    if os.environ.get("LORAPOD_MERGE") == "1":
        from engine.merge_pod import pod_main as merge_main

        return merge_main()
    if os.environ.get("LORAPOD_PLAYGROUND") == "1":
        from engine.playground import pod_main as playground_main

        return playground_main()
    from engine.pod import main as pod_main

    return pod_main()


def _run(args: argparse.Namespace) -> int:
    from engine.runner import main as run_main

    return run_main(args.spec, args.workdir, models_dir=args.models_dir)


def _demo_model(args: argparse.Namespace) -> int:
    from engine.demo import main as demo_main

    return demo_main(args.dir, args.dataset)


def _serve(args: argparse.Namespace) -> int:
    from engine.serve import main as serve_main

    return serve_main(args.workdir, port=args.port, host=args.host)


def _merge(args: argparse.Namespace) -> int:
    from engine.export import main as merge_main

    return merge_main(args.adapter, args.base, args.out, args.models_dir)


def _playground(args: argparse.Namespace) -> int:
    from engine.playground import main as playground_main

    return playground_main(args.workdir, models_dir=args.models_dir, host=args.host, port=args.port)


# Each command imports what it needs only when it runs: `pod` and `serve` start without the training stack.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "demo-model": _demo_model,
    "serve": _serve,
    "merge": _merge,
    "playground": _playground,
    "pod": lambda _args: _pod(),
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in COMMANDS:
        return COMMANDS[args.command](args)
    from engine.bench import main as bench_main

    raw = sys.argv[1:] if argv is None else argv
    return bench_main(args, raw[raw.index("bench") + 1 :])


if __name__ == "__main__":
    sys.exit(main())
