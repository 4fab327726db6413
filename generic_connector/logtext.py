"""Request data made safe to print: control characters as visible escapes.

A sender id, a text, a header or a platform's answer may hold CR/LF (a forged log line), ANSI
escapes (``ESC [ ...``: colours, cursor moves, a rewritten terminal title), C1 controls (some
terminals take U+009B as ``ESC [``), line and paragraph separators, or bidirectional overrides
(text that reads differently from what it is). ``printable`` writes each of them as an escape
(``\\n``, ``\\x1b``, ``\\u202e``) and leaves every other character alone.

Log lines: ``get_logger(name)`` is ``logging.getLogger(name)`` with ``EscapeControl`` attached,
which rewrites the string arguments of each record the logger emits (the message itself is the
code's own constant). A filter on a logger sees only the records logged on that very logger, not
those its children pass on, so every module that logs request data takes its logger from
``get_logger(__name__)``.

Fields: the project's main log lines carry what they are about as attributes of the record
(``logger.info(..., extra={"channel": ..., "request_id": ...})``). A text log shows the message
only; ``JSONFormatter`` writes each record as one JSON object a line, the message and those
fields, for a logging configuration (``rasa run --logging-config-file``; docs/operations.md).
"""

import datetime
import json
import logging
import numbers
import re
from typing import Any, Dict, Optional

__all__ = [
    "EscapeControl",
    "JSONFormatter",
    "get_logger",
    "install",
    "printable",
    "printable_json",
]

# C0 controls, DEL, C1 controls, lone surrogates (a header decoded with surrogateescape: print()
# would raise), U+2028/2029, the bidi embeddings and overrides, and the bidi isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: "re.Match[str]") -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` with control characters written as escapes: ``"a\\nb"`` -> ``"a\\\\nb"``."""
    return _UNSAFE.sub(_escape, text)


def printable_json(value: Any, **options: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **options)`` with the characters ``printable``
    escapes written as JSON ``\\u`` escapes: the same JSON value, safe on a terminal."""
    text = json.dumps(value, ensure_ascii=False, **options)
    # json.dumps escapes C0 controls in strings itself; a raw one left is indentation.
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class _Escaped:
    """An argument that is neither text nor a number (an exception, an object), printed with
    its control characters escaped, by ``%s`` as by ``%r``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return printable(str(self.value))

    def __repr__(self) -> str:
        return printable(repr(self.value))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if value is None or isinstance(value, numbers.Number):  # %d, %.3f keep working
        return value
    return _Escaped(value)


class EscapeControl(logging.Filter):
    """Rewrites a record's arguments through ``printable``; lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_safe(arg) for arg in args)
        elif isinstance(args, dict):  # logger.info("%(sender)s", {"sender": ...})
            escaped: Dict[Any, Any] = {key: _safe(value) for key, value in args.items()}
            record.args = escaped
        return True


def install(logger: logging.Logger) -> logging.Logger:
    """Attach ``EscapeControl`` to ``logger`` (once) and return it."""
    if not any(isinstance(f, EscapeControl) for f in logger.filters):
        logger.addFilter(EscapeControl())
    return logger


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with control characters of its arguments escaped."""
    return install(logging.getLogger(name))


# What every LogRecord has of its own; anything else on a record came with ``extra=``.
_PLAIN_RECORD = logging.LogRecord("", logging.INFO, "", 0, "", None, None)
_RECORD_ATTRIBUTES = frozenset(vars(_PLAIN_RECORD)) | {"message", "asctime"}
# Keys a JSON line writes itself, which a field does not replace.
_OWN_KEYS = ("time", "level", "logger", "message")


class JSONFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    then the record's fields (``extra=``), then ``exception`` when there is one.

    Control characters in the message and in text fields are escaped as in a text line
    (``printable``), and the line itself is ``printable_json``: no raw control character, a
    line per record. A Rasa event logged through structlog, rendered as JSON text (Rasa's
    ``FORCE_JSON_LOGGING``), becomes fields of the line, its ``event`` included, rather than a
    JSON text inside ``message``. A line of the project's loggers that begins
    ``Channel <name>:`` carries ``channel`` even where its code gives no fields.

    Usable from ``logging.config.dictConfig`` (``()`` or ``class:``), as a YAML file given to
    ``rasa run --logging-config-file`` is read.
    """

    def format(self, record: logging.LogRecord) -> str:
        event = _structlog_event(record)
        message = str(event["event"]) if event else record.getMessage()
        line: Dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": printable(message),
        }
        fields = event or {}
        fields.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
        )
        channel = _channel_of(record)
        if channel is not None:
            fields.setdefault("channel", channel)
        for key, value in fields.items():
            if key not in _OWN_KEYS:
                line[key] = _field(value)
        if record.exc_info:
            line["exception"] = _lines(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = _lines(record.exc_text)
        if record.stack_info:
            line["stack"] = _lines(self.formatStack(record.stack_info))
        return printable_json(line, default=str)


def _timestamp(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _structlog_event(record: logging.LogRecord) -> Optional[Dict[str, Any]]:
    """The fields of a structlog event rendered as a JSON object (Rasa's JSON renderer), with
    its ``event`` name; None for any other record."""
    text = record.msg
    if record.args or not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or "event" not in event:
        return None
    return event


def _channel_of(record: logging.LogRecord) -> Optional[str]:
    """The channel of a project line written ``"Channel %s: ..."``: its first argument."""
    if not record.name.startswith("generic_connector"):
        return None
    args = record.args
    if isinstance(args, tuple) and args and str(record.msg).startswith("Channel %s"):
        return str(args[0])
    return None


def _field(value: Any) -> Any:
    """A field's value for JSON: text escaped like the message, containers item by item."""
    if isinstance(value, str):
        return printable(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {printable(str(key)): _field(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_field(item) for item in value]
    return printable(str(value))


def _lines(text: str) -> str:
    """A traceback: each line escaped, the lines kept (JSON writes them as ``\\n``)."""
    return "\n".join(printable(line) for line in text.splitlines())
