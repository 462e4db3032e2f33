"""The job specification: one pydantic model shared by the CLI, the dashboard and the engine.

A ``JobSpec`` has four sections — ``dataset``, ``hyperparameters``, ``resources`` and the job's identity —
whose leaf field names are unique across the whole spec, so ``--set lora_r=32`` needs no section prefix.
Presets (``presets/*.toml``) are partial specs validated into these same section models.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from engine import SpecError

# The Llama 3 projection layers; LoRA on all of them is what QLoRA's authors found necessary to match full
# fine-tuning quality.
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_GPU_TYPES = ["NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL", "NVIDIA H100 PCIe"]
DEFAULT_BASE_MODEL = "meta-llama/Meta-Llama-3-70B-Instruct"
# The smoke preset's model: built offline into the data dir on first use (``python -m engine demo-model``).
DEMO_MODEL = "demo:tiny-llama"
# The forgetting check's default tasks: financial knowledge (MMLU's accounting, economics and econometrics
# subjects) and general knowledge (ARC-Easy).
RETENTION_TASKS = [
    "mmlu_professional_accounting", "mmlu_high_school_macroeconomics", "mmlu_high_school_microeconomics",
    "mmlu_econometrics", "arc_easy",
]  # fmt: skip
# Hyperparameters that only decide how the trained adapter is evaluated: outside training_hash.
EVALUATION_ONLY = frozenset(
    {
        "eval_max_prompts", "eval_batch_size", "judge", "judge_rubric", "judge_criteria", "judge_url", "judge_model",
        "judge_api_key_env", "retention", "retention_tasks", "retention_limit",
    }
)  # fmt: skip


class Provider(StrEnum):
    LOCAL = "local"
    RUNPOD = "runpod"


class CloudType(StrEnum):
    SECURE = "SECURE"
    COMMUNITY = "COMMUNITY"


class DatasetFormat(StrEnum):
    AUTO = "auto"
    BRIGHTRUN = "brightrun-lora-v4"
    BRIGHTRUN_JSONL = "brightrun-lora-v4-jsonl"
    CHAT_JSONL = "chat-jsonl"


class DatasetMode(StrEnum):
    CONVERSATIONS = "conversations"  # one example per conversation, every assistant turn supervised
    PAIRS = "pairs"  # one example per trainable pair (the seed's form)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False)


class DatasetSpec(_Section):
    """Which data to train on and how to turn it into examples."""

    dataset_path: str = Field(description="Dataset file: a local path or an artifact-store URI.")
    dataset_sha256: str | None = Field(None, description="sha256 of the file, filled in when registered.")
    dataset_format: DatasetFormat = Field(DatasetFormat.AUTO, description="Input format; auto-detected.")
    dataset_mode: DatasetMode = Field(DatasetMode.CONVERSATIONS, description="Example construction.")
    eval_fraction: float = Field(0.1, ge=0.0, le=0.5, description="Held-out share, split by conversation.")
    split_seed: int = Field(42, ge=0, description="Seed of the held-out split.")
    # Both repairs are on by default: the owner's files teach a literal backslash-n in up to half of the replies,
    # and about one reply in ten stops mid-sentence. Each is counted in the dataset manifest.
    unescape: bool = Field(True, description="Repair literal backslash-n in text into line breaks; false: keep.")
    drop_truncated: bool = Field(
        True, description="Leave replies that stop mid-sentence out of training (kept as context); false: train."
    )


class Hyperparameters(_Section):
    """What the trainer does. Names follow the seed's ``hyperparameters`` JSON."""

    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, le=0.9, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(ALL_LINEAR), min_length=1, description="Modules that get adapters."
    )
    learning_rate: float = Field(2e-4, gt=0.0, le=0.1, description="Peak learning rate.")
    num_epochs: int = Field(3, ge=1, le=100, description="Passes over the training split.")
    batch_size: int = Field(
        4, ge=1, le=1024, description="Sequences per micro-step; packed, each up to max_seq_length tokens."
    )
    gradient_accumulation_steps: int = Field(4, ge=1, le=1024, description="Micro-steps per optimizer step.")
    warmup_ratio: float = Field(0.03, ge=0.0, le=0.5, description="Share of steps spent warming up.")
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(0.3, gt=0.0, le=100.0, description="Gradient clipping norm.")
    optimizer: Literal[
        "auto", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit"
    ] = Field("auto", description="auto: paged 8-bit AdamW on CUDA with 4-bit weights, else torch AdamW.")
    bf16: bool = Field(True, description="bf16 compute (the 4-bit compute dtype too).")
    load_in_4bit: bool = Field(True, description="QLoRA: 4-bit base weights. Off: plain LoRA.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    bnb_4bit_use_double_quant: bool = Field(True, description="Quantize the quantization constants too.")
    # The seed said 2048, but Bright Run conversations run past 4k tokens: at 2048 the later assistant
    # turns of most conversations would be cut away or split from their context.
    max_seq_length: int = Field(4096, ge=64, le=131072, description="Tokens per packed sequence.")
    packing: bool = Field(True, description="Pack examples into full sequences, each kept isolated.")
    activation_checkpointing: bool = Field(True, description="Recompute activations to save memory.")
    # Speed settings: how fast the same training runs, each measured on and off (BENCHMARKS.md). A machine that
    # cannot honour one refuses the job before loading anything (engine.speed), rather than train slower unasked.
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto",
        description="Attention kernel. auto: flash_attention_2 on a CUDA GPU with bf16 where flash-attn or kernels "
        "is installed (packed rows flattened, each document attended alone), else sdpa (rows kept apart, each masked "
        "to its documents); flash_attention_2 needs CUDA, bf16 and the flash-attn or kernels package.",
    )
    liger_kernel: bool = Field(
        False, description="Liger's Triton kernels for RMSNorm, RoPE and SwiGLU (CUDA, liger-kernel installed)."
    )
    upcast_non_lora: bool = Field(
        True, description="4-bit: keep embedding, norms and lm_head in fp32 (peft's QLoRA recipe); off: bf16."
    )
    torch_compile: bool = Field(False, description="Compile the model with torch.compile before training.")
    save_steps: int = Field(100, ge=1, le=1_000_000, description="Checkpoint every N optimizer steps...")
    save_every_minutes: float = Field(10.0, gt=0.0, le=1440.0, description="...and every M minutes.")
    save_total_limit: int = Field(3, ge=1, le=1000, description="Checkpoints kept on disk.")
    log_every_steps: int = Field(10, ge=1, le=100_000, description="Metrics event interval.")
    status_every_steps: int = Field(50, ge=1, le=100_000, description="Status summary interval.")
    eval_every_steps: int = Field(50, ge=1, le=1_000_000, description="Eval-loss interval during training.")
    early_stopping_patience: int | None = Field(
        None, ge=1, le=1000, description="Stop after this many evaluations without a new lowest eval loss; unset: off."
    )
    overfitting_evals: int = Field(
        3, ge=1, le=100, description="Warn when eval loss rises this many evaluations in a row as train loss falls."
    )
    report_to: Literal["none", "wandb", "tensorboard"] = Field(
        "none",
        description="Also send the trainer's logs to W&B or TensorBoard (event files under the job's tensorboard/); "
        "the event stream is the same either way.",
    )
    eval_generations: int = Field(4, ge=0, le=64, description="Base-vs-adapter generations after training.")
    max_new_tokens: int = Field(256, ge=1, le=8192, description="Generation length bound in evaluation.")
    # Evaluation after training (engine.evaluation, engine.judge, engine.retention): none of it changes the weights,
    # so none of it is in training_hash and a resumed job may change it.
    eval_max_prompts: int = Field(
        0, ge=0, le=100_000, description="Held-out prompts answered by base and adapter, then judged; 0: every one."
    )
    eval_batch_size: int = Field(8, ge=1, le=256, description="Prompts generated or judged per batch in evaluation.")
    judge: Literal["base", "endpoint", "off"] = Field(
        "base",
        description="Pairwise judge of base vs adapter replies: the base model on the pod, an OpenAI-compatible "
        "endpoint called from your machine (`lorapod judge JOB`), or off.",
    )
    judge_rubric: str = Field("default", min_length=1, description="Rubric: a name in presets/rubrics or a path.")
    judge_criteria: dict[str, str] = Field(
        default_factory=dict, description="The rubric's questions, filled from judge_rubric when the spec is built."
    )
    judge_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. https://api.openai.com/v1.")
    judge_model: str | None = Field(None, description="The endpoint's model name.")
    judge_api_key_env: str = Field("JUDGE_API_KEY", description="Environment variable holding the endpoint's key.")
    retention: bool = Field(True, description="Forgetting check: lm-evaluation-harness tasks, base vs adapter.")
    retention_tasks: list[str] = Field(
        default_factory=lambda: list(RETENTION_TASKS), description="lm-evaluation-harness tasks (or YAML paths)."
    )
    retention_limit: int | None = Field(200, ge=1, description="Examples per retention task; unset: all of them.")
    seed: int = Field(42, ge=0, description="Training seed.")

    @model_validator(mode="after")
    def _check_attention(self) -> Hyperparameters:
        if self.attn_implementation == "flash_attention_2" and not self.bf16:
            raise ValueError(
                "attn_implementation: flash_attention_2 runs in bf16 or fp16 only; set bf16=true, or "
                "attn_implementation=auto"
            )
        if self.judge == "endpoint" and not (self.judge_url and self.judge_model):
            raise ValueError("judge: an endpoint judge needs judge_url and judge_model")
        return self


class Resources(_Section):
    """Where the job runs and what it may spend."""

    provider: Provider = Field(Provider.LOCAL, description="local (this machine) or runpod.")
    gpu_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_GPU_TYPES), description="RunPod GPU type ids, in priority order."
    )
    cloud_type: CloudType = Field(CloudType.SECURE, description="RunPod cloud: SECURE or COMMUNITY.")
    gpu_count: int = Field(1, ge=1, le=8, description="GPUs per pod; more than one trains as that many ranks.")
    parallelism: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="Several GPUs: ddp (each holds the whole 4-bit model; LoRA gradients reduced), fsdp (each "
        "holds a shard, for a model that does not fit one GPU); auto: ddp when one GPU holds the 4-bit model and "
        "a micro-batch (engine.memory's estimate), else fsdp.",
    )
    interruptible: bool = Field(False, description="Rent an interruptible pod where still offered.")
    max_hours: float | None = Field(None, gt=0.0, le=720.0, description="Wall-clock limit; unset: settings.")
    max_cost_usd: float | None = Field(None, gt=0.0, description="Per-job cost limit; unset: settings.")
    container_disk_gb: int = Field(50, ge=10, le=2000, description="Pod container disk.")
    network_volume_id: str | None = Field(None, description="RunPod network volume mounted at /workspace.")


class JobSpec(_Section):
    """Everything the engine needs to run one job. Secrets never go in here: they travel by environment."""

    spec_version: Literal[1] = 1
    job_id: str | None = Field(None, description="Assigned by the supervisor.")
    name: str | None = Field(None, max_length=200, description="A human name for the job.")
    preset: str | None = Field(None, description="The preset this spec started from.")
    base_model: str = Field(DEFAULT_BASE_MODEL, min_length=1, description="Hub id or local path.")
    model_size_b: float | None = Field(None, gt=0.0, description="Parameters (billions); unset: from name.")
    webhook_url: str | None = Field(None, description="Receives signed stage and status webhooks.")
    webhook_signature: Literal["seed", "prefixed"] = Field(
        "seed", description="X-Webhook-Signature: the bare hex HMAC (seed) or sha256=<hex> (prefixed)."
    )
    dataset: DatasetSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _check_resources(self) -> JobSpec:
        if self.resources.provider is Provider.RUNPOD and not self.resources.gpu_types:
            raise ValueError("gpu_types: a RunPod job needs at least one GPU type")
        if self.resources.parallelism == "fsdp" and self.resources.gpu_count < 2:
            raise ValueError("parallelism: fsdp shards the model across GPUs; set gpu_count=2 or more, or auto")
        return self

    def training_hash(self) -> str:
        """sha256 of what determines the trained weights; a workdir's checkpoints resume only under it."""
        material: dict[str, Any] = {
            "base_model": self.base_model,
            "dataset": self.dataset.model_dump(mode="json"),
            "hyperparameters": self.hyperparameters.model_dump(mode="json", exclude={*EVALUATION_ONLY, "report_to"}),
        }
        if self.resources.gpu_count > 1:  # the global batch is per-GPU batch × GPUs: another count of steps
            material["ranks"] = self.resources.gpu_count
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def parameters_b(self) -> float | None:
        """Model size in billions of parameters: explicit, or read from the model's name ("…-70B-…")."""
        return self.model_size_b if self.model_size_b is not None else model_size_from_name(self.base_model)


SECTIONS: dict[str, type[_Section]] = {
    "dataset": DatasetSpec,
    "hyperparameters": Hyperparameters,
    "resources": Resources,
}
_TOP_LEVEL = {name for name in JobSpec.model_fields if name not in SECTIONS}


def model_size_from_name(name: str) -> float | None:
    """Parameters in billions from a model id such as ``meta-llama/Meta-Llama-3-70B-Instruct``."""
    match = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", name.rsplit("/", 1)[-1])
    return float(match.group(1)) if match else None


def field_section(key: str) -> str | None:
    """The section holding the leaf field ``key`` (None for a top-level field); SpecError when unknown."""
    if key in _TOP_LEVEL:
        return None
    for section, model in SECTIONS.items():
        if key in model.model_fields:
            return section
    raise SpecError(f"{key}: unknown setting (see `lorapod presets show balanced` for every field)")


def field_info(key: str) -> FieldInfo:
    """The pydantic field behind a leaf key."""
    section = field_section(key)
    model: type[BaseModel] = JobSpec if section is None else SECTIONS[section]
    return model.model_fields[key]


def allowed_range(key: str) -> str:
    """A human description of what ``key`` accepts, from the field's own constraints."""
    info = field_info(key)
    bounds = []
    for item in info.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{symbol} {getattr(item, attr):g}")
        if isinstance(item, annotated_types.MinLen):
            bounds.append(f"of at least {item.min_length}")
    choices = _choices(info.annotation)
    if choices:
        return "one of: " + ", ".join(choices)
    kind = _type_name(info.annotation)
    return f"{kind} {' and '.join(bounds)}".strip() if bounds else kind


def _choices(annotation: Any) -> list[str]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return [m.value for m in annotation]
    if len(args) == 1:
        return _choices(args[0])
    return []


def _type_name(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    base = args[0] if optional and len(args) == 1 else annotation
    name = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(base)
    if name is None and typing.get_origin(base) is list:
        name = "a comma-separated list"
    name = name or str(base)
    return f"{name} (or none)" if optional else name


def parse_assignment(text: str) -> tuple[str, str]:
    """Split ``key=value``; SpecError when there is no ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"{text!r}: expected KEY=VALUE, e.g. lora_r=32")
    return key.strip(), value.strip()


def _parse_value(key: str, raw: str) -> Any:
    info = field_info(key)
    optional = type(None) in typing.get_args(info.annotation)
    if optional and raw.lower() in {"", "none", "null"}:
        return None
    is_list = typing.get_origin(info.annotation) is list
    if is_list:
        if raw.startswith("["):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SpecError(f"{key}: {raw!r} is not a JSON list ({exc.msg})") from None
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings to a nested spec/preset dict (not yet validated)."""
    result = json.loads(json.dumps(data, default=str))
    for text in overrides:
        key, raw = parse_assignment(text)
        section = field_section(key)
        target = result if section is None else result.setdefault(section, {})
        target[key] = _parse_value(key, raw)
    return result


def validate_spec(data: Mapping[str, Any]) -> JobSpec:
    """Validate a nested dict into a JobSpec; SpecError naming each bad field and what it accepts."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc, data)) from None


def describe_validation_error(exc: ValidationError, data: Mapping[str, Any] | None = None) -> str:
    """One line per problem: ``field: given value — must be <range>``."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = next((p for p in reversed(loc) if _is_known(p)), loc[-1] if loc else "spec")
        if error["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting")
            continue
        if error["type"] == "missing":
            lines.append(f"{key}: required")
            continue
        given = error.get("input")
        given_text = "" if isinstance(given, (dict, list)) else f"{given} is not allowed — "
        if _is_known(key) and error["type"] != "value_error":
            lines.append(f"{key}: {given_text}must be {allowed_range(key)}")
        else:
            lines.append(f"{key}: {error['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _is_known(key: str) -> bool:
    try:
        field_section(key)
    except SpecError:
        return False
    return key not in SECTIONS


def flatten(spec: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """Leaf fields of a spec or section as one flat dict (JSON-compatible values)."""
    data = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else dict(spec)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, Mapping):
            flat.update(flatten(value))
        else:
            flat[key] = value
    return flat


def diff(before: BaseModel | Mapping[str, Any], after: BaseModel | Mapping[str, Any]) -> list[FieldChange]:
    """Fields whose values differ, in field order."""
    old, new = flatten(before), flatten(after)
    keys = list(old) + [k for k in new if k not in old]
    return [FieldChange(key, old.get(key), new.get(key)) for key in keys if old.get(key) != new.get(key)]


class FieldChange(typing.NamedTuple):
    field: str
    before: Any
    after: Any
