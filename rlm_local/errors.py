"""Errors a user sees: each carries a message that says what went wrong and what to do, never a traceback."""

from __future__ import annotations


class RLMError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits non-zero."""


class ContextError(RLMError):
    """The context cannot be used: missing, empty, binary or unreadable."""


class ModelError(RLMError):
    """A model cannot be found, prepared or loaded, or does not fit the prompt."""


class SandboxError(RLMError):
    """The REPL worker or its container cannot be started or reached."""


class EngineError(RLMError):
    """An inference engine failed or went away."""


class ConfigError(RLMError):
    """The configuration is invalid."""


class PromptTooLong(ModelError):
    """A prompt does not fit the model's window (the run loop tells the model to send smaller pieces)."""

    def __init__(self, prompt_tokens: int, window: int, model: str) -> None:
        super().__init__(f"the prompt has {prompt_tokens:,} tokens but the window of {model} is {window:,} tokens")
        self.prompt_tokens = prompt_tokens
        self.window = window
