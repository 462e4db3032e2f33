"""Dataset preparation: read, validate and convert conversation files into exactly the tokens a model learns.

Formats (``engine.config.DatasetFormat``, detected from the first lines unless given): ``brightrun-lora-v4``
(one JSON document of conversations of training pairs), ``brightrun-lora-v4-jsonl`` (its export: a ``_meta``
line, then one pair per line) and ``chat-jsonl`` (``{"messages": [...]}`` per line). Validation reports every
error with its place (line and column, or conversation, pair and field) and every suspicious kind of content
as a counted warning; no input, however broken, raises. Conversion drops the duplicated user turn, builds one
example per conversation (``conversations`` mode, the default) or per reply (``pairs``), splits over-long
conversations at turn boundaries and holds out whole conversations for evaluation. Only a regular file is
read (a FIFO or a device is refused by name), a piece at a time: each conversation, or JSONL line, becomes
records before the next is parsed and a text that recurs is held once, so memory holds the records, not the
file. The package imports no torch: the CLI and the dashboard use it too.

The API the engine and the CLI call::

    ConvertOptions.from_spec(spec.dataset, spec.hyperparameters.max_seq_length)
    validate_file(path, *, format=..., mode=..., max_seq_length=..., tokenizer=None) -> ValidationReport
        report.ok, .errors, .warnings, .to_dict(), .format_text()
    convert_file(path, out_dir, options, *, tokenizer=None) -> Manifest      # DatasetError(report) on errors
    load_examples(out_dir) -> (train: list[Example], eval: list[Example], Manifest)
    prepare(path, options, *, tokenizer=None) -> Prepared                  # examples in memory, nothing written
    ChatTokenizer.load(path) / ChatTokenizer(tokenizers.Tokenizer)
        .encode(example.messages) -> Encoded(input_ids, assistant_mask)    # what TRL trains on, pre-tokenized

An ``Example`` has ``messages`` (Llama 3 chat messages; an assistant message with ``"weight": 0`` is context,
not a target, as in OpenAI's fine-tuning format) and ``meta`` (conversation id and index, persona, emotional
arc, topic, pair_ids, window, tokens). ``tokenizer`` may be a ChatTokenizer or a path; without one, tokens are
estimated at about four characters each, and every count says so (``tokens_estimated``).

Exceptions::

    EngineError (engine)
    └── DatasetError            a file that cannot be read or converted; .report holds the findings, if any
        ├── TokenizerError      a tokenizer that cannot be loaded or lacks the Llama 3 special tokens
        └── OutputError         a converted-dataset folder that cannot be written or read back
"""

from engine.dataset.errors import DatasetError, OutputError, TokenizerError
from engine.dataset.manifest import Manifest
from engine.dataset.model import Example, ExampleMessage
from engine.dataset.pipeline import ConvertOptions, Prepared, convert_file, load_examples, prepare, validate_file
from engine.dataset.report import Finding, Location, ValidationReport, WarningGroup
from engine.dataset.tokens import CharEstimate, ChatTokenizer, Encoded

__all__ = [
    "CharEstimate",
    "ChatTokenizer",
    "ConvertOptions",
    "DatasetError",
    "Encoded",
    "Example",
    "ExampleMessage",
    "Finding",
    "Location",
    "Manifest",
    "OutputError",
    "Prepared",
    "TokenizerError",
    "ValidationReport",
    "WarningGroup",
    "convert_file",
    "load_examples",
    "prepare",
    "validate_file",
]
