"""Every error type tlcore raises.

Each error also derives from the built-in exception a caller would naturally catch (``ValueError``,
``TypeError``, ``IndexError``, ``KeyError``, ``RuntimeError``), so code written against
TransformerLens's or HuggingFace's looser errors still works. Every message says what was wrong,
where (the file, field, tensor, argument or hook point) and what to do next.

Errors that concern one argument of a call carry it as ``error.argument``.
"""

from __future__ import annotations


class TlcoreError(Exception):
    """Base class of every error tlcore raises on purpose."""


class _MessageKeyError(KeyError):
    """A KeyError whose message prints as written.

    ``KeyError.__str__`` shows ``repr(arg)``, which wraps a multi-line message in quotes and escapes
    its newlines; these errors carry sentences, not keys.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class SpecError(TlcoreError, ValueError):
    """A model spec is malformed; the message names the file, the field and the reason."""


class UnknownArchitectureError(TlcoreError, _MessageKeyError):
    """No registered spec covers the requested model or HF architecture."""


class CheckpointMismatchError(TlcoreError, ValueError):
    """A checkpoint's tensors do not match its spec's weight map; the message names the keys."""


class CheckpointFormatError(CheckpointMismatchError):
    """A checkpoint file is malformed; the message names the file and the tensor, if any.

    Covers safetensors headers, shard indexes, GGUF headers, ``config.json`` and legacy ``.bin``
    files.

    A subclass of :class:`CheckpointMismatchError`, which tlcore raised for malformed headers
    before this type existed.
    """


class UnsupportedConfigError(TlcoreError, ValueError):
    """An HF config asks for a feature tlcore does not implement, so building would be wrong."""


class InvalidConfigError(TlcoreError, ValueError):
    """A model config value is invalid; the message names the field and where its value came from.

    Zero heads, a negative size, ``eps <= 0``, a size that does not divide, an absurd layer count:
    whether from a spec, a ``config.json``, a GGUF file or an argument, it is raised before
    anything is allocated.
    """


class HookNameError(TlcoreError, _MessageKeyError):
    """A hook name does not exist on the model; the message lists close matches."""


class HookReturnError(TlcoreError, ValueError):
    """A hook returned something that cannot replace the activation.

    Another shape, dtype or device, or not a tensor; the message names the hook point and what it
    expects.
    """


class HookConcurrencyError(TlcoreError, RuntimeError):
    """Hooks were added to a model while another thread's hooks are active on it.

    Hooks live on the model's modules, so two threads hooking one model at once would each run
    the other's hooks. Use one model per thread.
    """


class PluginError(TlcoreError, RuntimeError):
    """A plugin failed to load or registered something that conflicts with another plugin."""


class TokenizerRequiredError(TlcoreError, ValueError):
    """A string-handling method was called on a model that has no tokenizer."""


class CheckpointNotFoundError(TlcoreError, OSError):
    """A model reference names no local checkpoint, and the hub cannot provide it."""


class InputValidationError(TlcoreError, ValueError):
    """An argument or input of a public method is invalid; ``argument`` names it.

    Args:
        message: What was wrong and what to do.
        argument: The argument's name (``temperature``, ``input``, ``first_n_layers``, ...).
    """

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class InputTypeError(InputValidationError, TypeError):
    """An argument has the wrong type or dtype; also a ``TypeError``.

    ``uint8`` or ``bool`` token ids (not masks), a float where an int is needed, ...
    """


class InputRangeError(InputValidationError, IndexError):
    """An index-like input is out of range; also an ``IndexError``, as PyTorch's own error is.

    A token id outside the vocabulary, a sequence longer than ``n_ctx`` for learned positions.
    """


class ExportError(TlcoreError, ValueError):
    """A model cannot be written back as an HF checkpoint exactly; the message says why.

    A config written by hand (no weight map), a model cut to its first layers, a weight op with no
    exact reverse, a parameter the checkpoint has no place for (:mod:`tlcore.export`).
    """


class TiedWeightsError(TlcoreError, RuntimeError):
    """A processed unembedding held as derived from the embedding can no longer be computed.

    ``W_E`` was changed in place (or replaced) while ``W_U`` was still derived from it
    (:mod:`tlcore.components.tied_unembed`); untie first (read ``model.W_U``) before editing
    ``W_E``.
    """
