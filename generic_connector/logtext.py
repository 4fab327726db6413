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
"""

import json
import logging
import numbers
import re
from typing import Any, Dict

__all__ = ["EscapeControl", "get_logger", "install", "printable", "printable_json"]

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
