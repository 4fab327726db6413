"""Error types: HTTP answers for bad requests, located findings for bad configuration.

Every exception the package raises derives from ``GenericConnectorError``:

    GenericConnectorError
    ├── HTTPError            a request answered by the channel itself (status, message)
    ├── Unavailable          a shared store cannot be reached now (503)
    │   └── StoreUnavailable     Redis (stores.redis.client)
    ├── ConfigError          a configuration that cannot be used (its located findings)
    ├── RetryLater           a stored message to hand over again later, not counted
    ├── RenderError          a template whose result is no usable answer or request
    ├── ExpressionError      a JMESPath expression that does not compile (compiler)
    ├── EvaluationError      an expression that failed on this input (expressions)
    ├── MappingError         an event that does not map to a message (mapping)
    ├── FetchFailed          the platform gave no usable answer to a fetch (fetch_template)
    ├── URLRefused           a rendered URL that is not sent (outbound)
    ├── XMLRefused           an XML request body that is not read (xmlbody)
    ├── AuthFailed, AuthUnavailable, AuthConfigError, KeyFormatError   (auth)
    └── CaseError, StarterError, NothingToGuess, BodyTooLarge, UsageError   (the commands)

The pipeline turns them into statuses in one place (``Pipeline.run`` and its stages' table).
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional


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


# What a finding is about: a stable name to match on (the message is for people, and its
# words may change). tests/test_errors.py holds FindingCode and FINDING_CODES to each other.
FindingCode = Literal[
    "unreadable-file",
    "invalid-yaml",
    "empty-file",
    "not-a-mapping",
    "unknown-channel-key",
    "mapping-not-found",
    "unknown-key",
    "missing-key",
    "wrong-type",
    "invalid-value",
    "expression-syntax",
    "expression-invalid",
    "unknown-kind",
    "unused-template",
    "missing-template",
    "missing-url",
    "unknown-body-format",
    "invalid-header-name",
    "invalid-host",
    "url-from-request",
    "duplicate-fetch",
    "duplicate-step",
    "renders-without-template",
    "needs-shared-store",
    "missing-url-env",
    "needs-outbound",
    "unknown-template",
    "unknown-token",
    "missing-env",
    "empty-secret",
    "invalid-secret",
    "duplicate-name",
    "rasa-channel-clash",
    "test-failed",
    "answer-fails",
    "always-null",
]
FINDING_CODES: Dict[FindingCode, str] = {
    # Files
    "unreadable-file": "the file cannot be read, or is not UTF-8 text",
    "invalid-yaml": "the file is not valid YAML (a syntax error, a key given twice)",
    "empty-file": "the file holds nothing",
    "not-a-mapping": "a file or a channel entry is a list or a value, not a mapping of keys",
    "unknown-channel-key": "a credentials key meant for a generic channel that Rasa cannot load",
    "mapping-not-found": "`mapping:` names no file and no ready mapping",
    # What the schema checks
    "unknown-key": "a key the schema does not know at that level",
    "missing-key": "a required key is absent",
    "wrong-type": "a value of another type than the key takes",
    "invalid-value": "a value the schema refuses otherwise: a pattern, a range, a choice",
    "expression-syntax": "a JMESPath expression that does not parse",
    "expression-invalid": "an expression that parses but is refused: a function called wrongly",
    # What the sections need beyond the schema
    "unknown-kind": "an outbound key that is no message kind",
    "unused-template": "an outbound template that outbound.turn leaves unused",
    "missing-template": "outbound has no template for text messages",
    "missing-url": "an outbound template without a url",
    "unknown-body-format": "a content_type that is no body format",
    "invalid-header-name": "a header name HTTP does not allow",
    "invalid-host": "an allow_hosts entry that is no host or host:port",
    "url-from-request": "a URL whose host comes from request data, without allow_hosts",
    "duplicate-fetch": "two fetches of one name",
    "duplicate-step": "two steps of one outbound template with one name",
    "renders-without-template": "outbound.renders names a kind the mapping has no template for",
    "needs-shared-store": "early acknowledgement on a store that has no inbox",
    "missing-url-env": "a shared store without url_env",
    "needs-outbound": "deferred replies or a handover relay without an outbound section",
    "unknown-template": "handover.relay names no template of the outbound section",
    "unknown-token": "token() naming no entry of the tokens section, or no literal name",
    # The environment rasa run starts in
    "missing-env": "an environment variable the channel reads is not set",
    "empty-secret": "a secret's environment variable is set but empty",
    "invalid-secret": "a secret the auth scheme cannot use, such as malformed key material",
    # Names
    "duplicate-name": "generic channels with one name, or names Rasa's server cannot tell apart",
    "rasa-channel-clash": "a generic channel named like Rasa's own channel in the same file",
    # Test cases
    "test-failed": "a mapping test case does not give what it expects",
    "answer-fails": "the response fails on a test case's request with sample bot replies",
    # Warnings: the channel works, but a template reads what is never there
    "always-null": "a template reads a field null in every reply and test case (a warning)",
}
# How bad a finding is: an error makes the channel unusable (rasa run refuses it, validate
# fails); a warning is printed by validate, which still passes (unless strict).
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem in a channel configuration, located as precisely as the source allows.

    ``code`` says what kind of problem it is (``FINDING_CODES``): what code matches on, never
    the message. ``cause`` is the error the finding reports when one was raised (the
    ``ExpressionError`` of an expression that does not compile, the schema's error of a value
    it refuses): what ``explain`` reads instead of the message. It is neither shown nor
    compared. ``severity``: only ``validate`` makes warnings; ``rasa run`` never sees them.
    """

    code: FindingCode
    path: str
    message: str
    hint: str = ""
    file: Optional[str] = None
    line: Optional[int] = None
    column: Optional[int] = None
    cause: Optional[Exception] = field(default=None, compare=False, repr=False)
    severity: Severity = "error"

    def location(self) -> str:
        """``file:line:column`` with whatever parts are known."""
        parts = [self.file or "<credentials>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        warning = "warning: " if self.severity == "warning" else ""
        text = f"{self.location()}: {warning}{self.path}: {self.message}"
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
