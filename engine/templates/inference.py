"""Chat with a lorapod adapter: loads the base model and the adapter, applies the Llama 3 chat template, and
stops at <|eot_id|>.

    python inference.py --prompt "I'm anxious about retirement savings."
    python inference.py                      # interactive: type a message, empty line to quit
    python inference.py --load-in-4bit ...   # 70B on one 80 GB GPU

Requires: pip install -r requirements.txt (and a Hugging Face token with access to the base model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

HERE = Path(__file__).resolve().parent


def load(adapter_dir: Path, base_model: str | None, load_in_4bit: bool):
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = base_model or config["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    kwargs = {"dtype": torch.bfloat16, "device_map": "auto"}
    if load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    return model, tokenizer


def reply(model, tokenizer, messages, *, temperature: float, max_new_tokens: int) -> str:
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": 0.9} if temperature > 0 else {"do_sample": False}
    )
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=eot,
            pad_token_id=tokenizer.pad_token_id or eot,
            **sampling,
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", help="one user message; omit for an interactive chat")
    parser.add_argument("--system", default=None, help="system prompt (default: the one in example_prompts.jsonl)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--adapter", type=Path, default=HERE / "adapter")
    parser.add_argument("--base-model", default=None, help="override the base model id or path")
    parser.add_argument("--load-in-4bit", action="store_true", help="NF4 base weights (70B fits one 80 GB GPU)")
    args = parser.parse_args()

    system = args.system
    examples = HERE / "example_prompts.jsonl"
    if system is None and examples.exists():
        first = examples.read_text(encoding="utf-8").splitlines()
        system = json.loads(first[0]).get("system") if first else None
    model, tokenizer = load(args.adapter, args.base_model, args.load_in_4bit)
    messages = [{"role": "system", "content": system}] if system else []
    prompts = [args.prompt] if args.prompt else iter(lambda: input("you> ").strip(), "")
    for prompt in prompts:
        messages.append({"role": "user", "content": prompt})
        answer = reply(model, tokenizer, messages, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
        messages.append({"role": "assistant", "content": answer})
        print(answer if args.prompt else f"assistant> {answer}\n")


if __name__ == "__main__":
    main()
