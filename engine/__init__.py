"""lorapod's headless training engine: everything that runs inside the GPU pod.

The engine ships alone in the pod image, so it imports nothing of ``tui``, ``store`` or ``remote``.
Importing this package is cheap; torch and the training stack load only in the modules that train.

Exceptions (``LorapodError`` is the root of every error lorapod raises on purpose, in every package: the
engine's, ``store.errors.StoreError``, ``remote.provider.ProviderError`` and
``remote.supervisor.SupervisorError``; its message is written for the user)::

    LorapodError
    └── EngineError                 base of everything the engine raises on purpose
    ├── SpecError                   a job specification that cannot be run (field, value, allowed range)
    ├── DatasetError                a dataset that cannot be read or converted (engine.dataset)
    │   ├── TokenizerError          a tokenizer that cannot be loaded or lacks the Llama 3 tokens
    │   └── OutputError             a converted-dataset folder that cannot be written or read
    ├── SpecMismatch                a workdir that holds another job's training (engine.failures)
    ├── NonFiniteLoss               the training loss became NaN or infinite (engine.failures)
    ├── JobCancelled                a requested stop, raised between stages (engine.failures)
    ├── PackageError                a package that cannot be built or no longer verifies (engine.packaging)
    ├── UnsafePartial               a partial file's name taken by a link: refused, not followed (engine.partials)
    ├── SecretsError                a pod's secrets not delivered, taken twice or kept off tmpfs (engine.pod_secrets)
    ├── ArtifactStoreError          an artifact store that cannot be reached or refuses (engine.artifacts)
    │   ├── ChecksumMismatch        a stored file whose sha256 is not the one recorded
    │   └── TusError                a resumable upload refused, or failing again and again (engine.tus)
    ├── PlaygroundError             a job the playground cannot serve: no adapter yet (engine.playground)
    └── BenchmarkFailed             a benchmark run whose loss or weights show it did not train (engine.bench)

Modules: ``config`` (the JobSpec), ``chat`` (the Llama 3 format), ``dataset`` (validation and conversion),
``events`` and ``workdir`` (the record a job leaves), ``runner`` (``python -m engine run``) and the stages it
calls — ``prepare``, ``model``, ``training``, ``evaluation``, ``packaging`` — plus ``serve`` (the pod API, with
``event_log`` and ``inputs``), ``playground`` (side-by-side replies of a base model and a job's adapter),
``webhooks``, ``partials`` (files written before they are renamed into place),
``artifacts`` (where packages are stored: a folder or Supabase Storage, with ``tus`` and ``supabase_storage``),
``pod_secrets`` (the secrets a pod is handed after it starts), ``limits`` (the cost and duration limits a job
keeps by itself), ``distributed`` (a job's ranks on several GPUs), ``speed`` (the training-speed settings),
``demo`` (the offline demo model) and ``bench`` (the GPU benchmark, its model in ``bench_model``).
"""

import os
import time

# When this process began, as near as Python lets us know: ``python -m engine`` imports this package first,
# and the engine's wall time (so its cost) counts from here. A rank of a multi-GPU job counts from its launcher's
# start instead (the monotonic clock is the system's, shared by every process).
PROCESS_STARTED = float(os.environ.get("LORAPOD_LAUNCHER_STARTED") or time.monotonic())


class LorapodError(Exception):
    """The root of every error lorapod raises on purpose, whichever package raises it; the message says what
    went wrong and what to do, for the user."""


class EngineError(LorapodError):
    """Base class of the engine's own errors; the message is meant for the user."""


class SpecError(EngineError, ValueError):
    """A job specification (or an override of one) that fails validation."""
