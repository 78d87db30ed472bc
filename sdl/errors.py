"""Errors that users see. Each names the field at fault and what is allowed."""

from __future__ import annotations

from typing import Any


class SdlError(Exception):
    """Base of every error sdl raises on purpose."""

    def __reduce__(self):
        # Subclasses take their own arguments (field, message, value), not the text that
        # Exception keeps in ``args``, so the default pickling (cls(*args)) fails and a process
        # pool that has to send one back breaks instead of reporting it. Rebuild from state.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type, args: tuple, state: dict) -> SdlError:
    # the built-in base whose __new__ the type really uses (OSError's for a ConnectionError)
    for base in cls.__mro__:
        if base.__module__ == "builtins":
            try:
                err = base.__new__(cls, *args)
                break
            except TypeError:
                continue
    BaseException.__init__(err, *args)
    err.__dict__.update(state)
    return err


class InvalidInput(SdlError, ValueError):
    """Bad input: ``field`` names what is wrong, ``message`` says what is allowed."""

    def __init__(self, field: str, message: str, value: Any = ...):
        self.field = field
        self.message = message
        self.value = value
        text = f"{field}: {message}"
        if value is not ...:
            text += f" (got {shown(value)})"
        super().__init__(text)

    def under(self, prefix: str) -> "InvalidInput":
        """The same error with its field named from an enclosing request (``spec.budget``);
        itself when the field already is under ``prefix``."""
        if self.field == prefix or self.field.startswith(prefix + "."):
            return self
        return InvalidInput(f"{prefix}.{self.field}", self.message, self.value)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.value is not ...:
            d["value"] = shown(self.value)
        return d


def shown(value: Any, limit: int = 300) -> str:
    """``repr(value)``, cut at ``limit`` characters: an error names the value, it does not
    print back a whole spec."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class DeviceFault(SdlError, RuntimeError):
    """A device reported an error (robot drop, empty slot, detector timeout)."""

    def __init__(self, device: str, message: str):
        self.device = device
        self.message = message
        super().__init__(f"{device}: {message}")
