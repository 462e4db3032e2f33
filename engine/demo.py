"""The demo model: a tiny Llama-architecture model and a Llama 3 style tokenizer, built offline in seconds.

The tokenizer is a byte-level BPE trained locally on the given text, carrying the Llama 3 special tokens and
chat template, so every code path that handles Llama 3 (templates, masks, stop tokens) runs on it. The model
is randomly initialised; training it on the sample data is what the smoke preset does. Building the
tokenizer needs only ``tokenizers``; building the model needs the training extra (torch, transformers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from engine.chat import BEGIN_OF_TEXT, CHAT_TEMPLATE, END_OF_TEXT, EOT, SPECIAL_TOKENS

DEMO_VOCAB_SIZE = 4096
# Llama 3's pre-tokenizer split: contractions, words, 1-3 digit groups, punctuation runs, newlines, spaces.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# Widths chosen so every Linear layer's output is a multiple of 32: bitsandbytes' CPU 4-bit kernels need it.
DEMO_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 192,
    "tie_word_embeddings": True,
    "max_position_embeddings": 4096,
}


def build_demo_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = DEMO_VOCAB_SIZE) -> Path:
    """Train a byte-level BPE tokenizer with the Llama 3 special tokens on ``texts``; write it to out_dir."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BEGIN_OF_TEXT,
        "eos_token": EOT,
        "pad_token": END_OF_TEXT,
        "model_max_length": DEMO_CONFIG["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {"bos_token": BEGIN_OF_TEXT, "eos_token": EOT, "pad_token": END_OF_TEXT}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return out_dir / "tokenizer.json"


# A few seconds of full-parameter pretraining on the sample's conversations in the Llama 3 chat format, so
# the base model behaves like a (very small) instruct model: it answers after an assistant header and stops
# with <|eot_id|>, and "base vs adapter" generations show words rather than noise.
PRETRAIN_STEPS = 200
PRETRAIN_SEQ = 128
PRETRAIN_BATCH = 4
DEMO_SEED = 1234


def sample_dataset() -> Path:
    """The project's synthetic brightrun-lora-v4 sample (packaged with the engine, or in the checkout)."""
    packaged = Path(__file__).with_name("data") / "brightrun-sample.json"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "samples" / "brightrun-sample.json"


def dataset_texts(path: Path) -> list[str]:
    """Every message text in a brightrun-lora-v4 file or chat JSONL, in file order, without duplicates."""
    keys = {"content", "system_prompt", "current_user_input", "target_response"}
    seen: dict[str, None] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in keys and isinstance(value, str) and value.strip():
                    seen.setdefault(value, None)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    text = path.read_text(encoding="utf-8-sig")
    try:
        walk(json.loads(text))
    except json.JSONDecodeError:
        for line in text.splitlines():
            if line.strip():
                walk(json.loads(line))
    return list(seen)


def dataset_chats(path: Path) -> list[str]:
    """The conversations of a dataset file rendered in the Llama 3 chat format (whole, not windowed)."""
    from engine.chat import render
    from engine.dataset import ConvertOptions, prepare

    prepared = prepare(path, ConvertOptions(eval_fraction=0.0, max_seq_length=1_000_000))
    return [render(example.messages).text for example in prepared.examples]


def build_demo_model(out_dir: Path, texts: list[str], chats: list[str] | None = None) -> Path:
    """Tokenizer (trained on ``texts``) plus a tiny Llama (DEMO_CONFIG) briefly pretrained on ``chats``
    (or the texts); saved to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    build_demo_tokenizer(texts, out_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out_dir)
    torch.manual_seed(DEMO_SEED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **DEMO_CONFIG,  # type: ignore[arg-type]
    )
    model = LlamaForCausalLM(config)
    ids = tokenizer.backend_tokenizer.encode("".join(chats or texts), add_special_tokens=False).ids
    stream = torch.tensor(ids, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(DEMO_SEED)
    model.train()
    losses = []
    for _ in range(PRETRAIN_STEPS):
        starts = torch.randint(0, max(1, len(stream) - PRETRAIN_SEQ - 1), (PRETRAIN_BATCH,), generator=generator)
        batch = torch.stack([stream[s : s + PRETRAIN_SEQ] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    (out_dir / "lorapod-demo.json").write_text(
        json.dumps(
            {"pretrain_steps": PRETRAIN_STEPS, "loss": [round(losses[0], 3), round(losses[-1], 3)], "texts": len(texts)}
        ),
        encoding="utf-8",
    )
    return out_dir


def main(out_dir: Path, dataset: Path | None = None) -> int:
    """``python -m engine demo-model DIR``: build the demo model from the sample (or ``dataset``) text."""
    import time

    source = dataset or sample_dataset()
    start = time.perf_counter()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    build_demo_model(out_dir, dataset_texts(source), dataset_chats(source))
    print(f"demo model built in {out_dir} from {source.name} in {time.perf_counter() - start:.1f} s")
    return 0
