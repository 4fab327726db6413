"""Error types: HTTP answers for bad requests, located findings for bad configuration.

Every exception the package raises derives from ``GenericConnectorError``:

    GenericConnectorError
    ├── HTTPError            a request answered by the channel itself (status, message)
    ├── Unavailable          a shared store cannot be reached now (503)
    │   └── StoreUnavailable     Redis (redis_store)
    ├── ConfigError          a configuration that cannot be used (its located findings)
    ├── RetryLater           a stored message to hand over again later, not counted
    ├── RenderError          a template whose result is no usable answer or request
    ├── ExpressionError      a JMESPath expression that does not compile (compiler)
    ├── EvaluationError      an expression that failed on this input (expressions)
    ├── MappingError         an event that does not map to a message (mapping)
    ├── FetchFailed          the platform gave no usable answer to a fetch (fetch_template)
    ├── URLRefused           a rendered URL that is not sent (outbound)
    ├── AuthFailed, AuthUnavailable, AuthConfigError, KeyFormatError   (auth)
    └── CaseError, StarterError, NothingToGuess, BodyTooLarge, UsageError   (the commands)

The pipeline turns them into statuses in one place (``Pipeline.run`` and its stages' table).
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional


class GenericConnectorError(Exception):
    """The base of every exception the package raises."""


class HTTPError(GenericConnectorError):
    """A request the channel answers itself, with a status and a JSON error body.

    Raised where the problem is known (decoding, mapping, handing over to Rasa) and
    rendered once, by the channel's route handler.
    """

    def __init__(
        self,
        status: int,
        message: str,
        headers: Optional[Dict[str, str]] = None,
        reason: Optional[str] = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        # Why, for the log only (a signature's reason is not told to the caller).
        self.reason = reason
        self.details = details

    def body(self) -> Dict[str, Any]:
        """The JSON error body: ``{"error": message, **details}``."""
        return {"error": self.message, **self.details}


class Unavailable(GenericConnectorError):
    """A shared store the channel needs cannot be reached now: the platform should retry (503).

    The message says which one, never a password.
    """


@dataclass(frozen=True)
class Finding:
    """One problem in a channel configuration, located as precisely as the source allows."""

    path: str
    message: str
    hint: str = ""
    file: Optional[str] = None
    line: Optional[int] = None
    column: Optional[int] = None

    def location(self) -> str:
        """``file:line:column`` with whatever parts are known."""
        parts = [self.file or "<credentials>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        text = f"{self.location()}: {self.path}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def as_dict(self) -> Dict[str, Any]:
        """Machine-readable form for ``--format json``."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class ConfigError(GenericConnectorError):
    """A channel configuration that cannot be used; carries every finding at once."""

    def __init__(self, findings: List[Finding]) -> None:
        self.findings = findings
        super().__init__("\n".join(str(f) for f in findings))


class RetryLater(GenericConnectorError):
    """Raised by a handler when the message cannot be handled *now* for reasons of its own
    (the assistant is loading): it is handed over again after ``delay`` seconds, and the
    attempt is not counted against ``max_attempts``."""

    def __init__(self, delay: float = 1.0, reason: str = "") -> None:
        self.delay = delay
        super().__init__(reason or f"retry in {delay:g} s")


class RenderError(GenericConnectorError, ValueError):
    """A template whose result is no usable answer (not writable in its content type) or no
    usable request for a message."""
