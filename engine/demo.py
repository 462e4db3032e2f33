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
