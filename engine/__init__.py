"""lorapod's headless training engine: everything that runs inside the GPU pod.

The engine ships alone in the pod image, so it imports nothing of ``tui``, ``store`` or ``remote``.
Importing this package is cheap; torch and the training stack load only in the modules that train.

Exceptions::

    EngineError                     base of everything the engine raises on purpose
    └── SpecError                   a job specification that cannot be run (field, value, allowed range)
"""


class EngineError(Exception):
    """Base class of the engine's own errors; the message is meant for the user."""


class SpecError(EngineError, ValueError):
    """A job specification (or an override of one) that fails validation."""
