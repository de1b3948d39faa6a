"""Every error type tlcore raises.

Each error also derives from the built-in exception a caller would naturally catch (``ValueError``,
``KeyError``, ``RuntimeError``), so code written against TransformerLens's looser errors still
works.
"""


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


class ConfigError(SpecError):
    """A ``HookedTransformerConfig`` field has an invalid value or combination (named in the error).

    A subclass of :class:`SpecError`: a config written by hand plays the part of a spec.
    """


class CheckpointMismatchError(TlcoreError, ValueError):
    """A checkpoint's tensors do not match its spec's weight map; the message names the keys."""


class UnsupportedConfigError(TlcoreError, ValueError):
    """An HF config asks for a feature tlcore does not implement, so building would be wrong."""


class HookNameError(TlcoreError, _MessageKeyError):
    """A hook name does not exist on the model; the message lists close matches."""


class PluginError(TlcoreError, RuntimeError):
    """A plugin failed to load or registered something that conflicts with another plugin."""


class TokenizerRequiredError(TlcoreError, ValueError):
    """A string-handling method was called on a model that has no tokenizer."""
