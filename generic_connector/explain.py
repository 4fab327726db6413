"""Findings in plain words: JMESPath syntax errors, YAML errors, keys at the wrong level and
expressions YAML did not read as text, explained with the column and a fix.

``generic-connector validate`` and the channel's start-up (``startup.load_startup_channel``)
word their findings with ``explain_findings``.
"""

import dataclasses
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from jsonschema import ValidationError

from generic_connector.compiler import ExpressionError
from generic_connector.config import SCHEMA
from generic_connector.errors import Finding
from generic_connector.expressions import INCOMPLETE

COMPILE = "expression does not compile: "


def explain_findings(
    findings: List[Finding], document: Optional[Dict[str, Any]] = None, label: str = ""
) -> List[Finding]:
    """The findings with raw parser messages explained: JMESPath syntax errors, YAML errors,
    keys at the wrong level and expressions YAML did not read as text."""
    name = document.get("name") if isinstance(document, dict) else None
    prefix = name if isinstance(name, str) and name else label
    return [explain_finding(f, prefix) for f in findings]


def explain_finding(finding: Finding, prefix: str = "") -> Finding:
    """One finding, explained; unchanged when there is nothing to add. ``prefix`` is the
    channel's name in front of the finding's key path."""
    message, hint, cause = finding.message, finding.hint, finding.cause
    keys = _keys_in(finding.path, prefix)
    if finding.code == "expression-syntax" and isinstance(cause, ExpressionError):
        plain = explain_expression_error(cause)
        if plain is not None:
            message, hint = COMPILE + plain[0], plain[1]
    elif finding.code == "unknown-key" and keys:
        elsewhere = belongs_under(str(keys[-1]), keys[:-1])
        if elsewhere is not None:
            hint = elsewhere
    elif finding.code == "wrong-type" and _unquoted_bracket(cause):
        hint = _quote_hint(finding, keys, _unquoted_bracket(cause))
    elif finding.code == "invalid-yaml":
        hint = _yaml_hint(finding) or hint
    if (message, hint) == (finding.message, finding.hint):
        return finding
    return dataclasses.replace(finding, message=message, hint=hint)


def _unquoted_bracket(cause: Optional[Exception]) -> str:
    """For a string expected where YAML read an object or a list (an expression YAML did not
    read as text): the bracket it starts with; else ''."""
    if not isinstance(cause, ValidationError) or cause.validator != "type":
        return ""
    if cause.validator_value != "string":
        return ""
    if isinstance(cause.instance, dict):
        return "{"
    return "[" if isinstance(cause.instance, list) else ""


def _keys_in(path: str, prefix: str) -> List[Any]:
    """The key path of a finding's ``path`` (``shop.request.ignore[0].when``), without the
    channel's name in front."""
    if prefix and (
        path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")
    ):
        path = path[len(prefix) :]
    elif prefix:
        return []
    return [int(i) if i else k for i, k in re.findall(r"\[(\d+)\]|([^.\[\]]+)", path)]


@lru_cache(maxsize=1)
def _schema_keys() -> Tuple[Dict[str, List[Tuple[str, ...]]], Set[str]]:
    """Where each key of the channel schema may be written (section paths, lists as "[]"),
    and the keys that hold an expression. Test cases are left out: their keys mirror the
    mapping's."""
    sections: Dict[str, List[Tuple[str, ...]]] = {}
    expressions: Set[str] = set()
    definitions = SCHEMA.get("definitions", {})

    def walk(schema: Any, path: Tuple[str, ...], depth: int) -> None:
        if not isinstance(schema, dict) or depth > 12:
            return
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/definitions/"):
            walk(definitions.get(reference.rsplit("/", 1)[1]), path, depth + 1)
        for key, sub in schema.get("properties", {}).items():
            if path == () and key == "tests":
                continue
            if path not in sections.setdefault(key, []):
                sections[key].append(path)
            if isinstance(sub, dict) and (
                sub.get("$ref") == "#/definitions/expression" or sub.get("format") == "jmespath"
            ):
                expressions.add(key)
            walk(sub, path + (key,), depth + 1)
        items = schema.get("items")
        walk(items, path + ("[]",), depth + 1)
        for keyword in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(keyword, []):
                walk(sub, path, depth + 1)
        walk(schema.get("then"), path, depth + 1)
        walk(schema.get("else"), path, depth + 1)

    walk(SCHEMA, (), 0)
    return sections, expressions


def belongs_under(key: str, section: List[Any]) -> Optional[str]:
    """``'text belongs under request'``: where a key that is unknown here is written instead."""
    here = tuple("[]" if isinstance(k, int) else str(k) for k in section)
    places = [p for p in _schema_keys()[0].get(key, []) if p != here]
    if not places:
        return None
    place = min(places, key=len)  # the shallowest; among those, the schema's order
    if not place:
        return f"{key} belongs at the top level of the channel"
    return f"{key} belongs under {'.'.join(place).replace('.[]', '[]')}"


def _quoted(value: str) -> str:
    """``value`` as a YAML string that keeps it as it is."""
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(finding: Finding) -> Optional[str]:
    if not finding.file or not finding.line:
        return None
    try:
        lines = Path(finding.file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return lines[finding.line - 1] if finding.line <= len(lines) else None


_KEY_VALUE = re.compile(r"^\s*(?:-\s+)?(?P<key>[A-Za-z_][\w-]*):\s+(?P<value>\S.*?)\s*$")


def _quote_hint(finding: Finding, keys: List[Any], bracket: str) -> str:
    """For an expression YAML read as an object or a list: quote it."""
    read_as = "an object" if bracket == "{" else "a list"
    key = str(keys[-1]) if keys else "key"
    line = _line(finding)
    found = _KEY_VALUE.match(line or "")
    value = found["value"] if found and found["value"].startswith(bracket) else None
    example = _quoted(value) if value else ('"{a: b.c}"' if bracket == "{" else '"[a, b]"')
    return (
        f"an expression starting with {bracket} must be quoted in YAML, or YAML reads it as "
        f"{read_as}: {key}: {example}"
    )


# Characters that make YAML read a plain value as something else than the text written.
_YAML_SPECIAL = "{[`@!*&%"


def _yaml_hint(finding: Finding) -> Optional[str]:
    """For a YAML error on (or just after) an unquoted expression: quote it."""
    if not finding.file or not finding.line:
        return None
    expression_keys = _schema_keys()[1]
    for line_number in range(finding.line, max(0, finding.line - 3), -1):
        line = _line(dataclasses.replace(finding, line=line_number))
        found = _KEY_VALUE.match(line or "")
        if not found or found["key"] not in expression_keys:
            continue
        key, value = found["key"], found["value"]
        if value[0] in _YAML_SPECIAL or ": " in value:
            first = value[0] if value[0] in _YAML_SPECIAL else ": "
            what = f"starting with {first}" if first != ": " else "holding ': '"
            return f"an expression {what} must be quoted in YAML: {key}: {_quoted(value)}"
    return None


# jmespath's token types, as the messages name them.
_TOKENS = {
    "dot": "`.`", "eof": "the end", "literal": "a `literal`", "number": "a number",
    "lbracket": "`[`", "rbracket": "`]`", "lbrace": "`{`", "rbrace": "`}`", "lparen": "`(`",
    "rparen": "`)`", "comma": "`,`", "colon": "`:`", "pipe": "`|`", "or": "`||`",
    "and": "`&&`", "star": "`*`", "flatten": "`[]`", "filter": "`[?`", "current": "`@`",
    "expref": "`&`", "not": "`!`", "eq": "`==`", "ne": "`!=`", "lt": "`<`", "gt": "`>`",
    "lte": "`<=`", "gte": "`>=`", "unquoted_identifier": "a name",
    "quoted_identifier": "a quoted name", "raw_string": "a 'string'",
}  # fmt: skip
_CLOSING = {"(": ")", "[": "]", "{": "}"}
_OPERATORS = ("||", "&&", "==", "!=", "<=", ">=", "|", "<", ">", "!", ",", ":", ".", "[?")


def explain_expression_error(error: ExpressionError) -> Optional[Tuple[str, str]]:
    """(message, hint) in plain words for a JMESPath syntax error ``compile_expression``
    raised, with the column and a fix; None when its message is already plain (an expression
    that parses but is refused)."""
    if not error.syntax or error.position is None or error.reason is None:
        return None
    source, what, column = error.expression, error.reason, error.position + 1
    token = error.token or ""
    if what == INCOMPLETE:
        return _ends_early(source)
    char = source[column - 1] if source and 0 < column <= len(source) else None
    if error.expected:
        return _expecting(error.expected, error.token_type or "", column, source)
    if what.startswith("Unexpected token: "):
        return _unexpected(token, column, source)
    if what == "Unknown token '='":
        fixed = source[: column - 1] + "==" + source[column:] if source and char == "=" else None
        hint = "compare with ==" + (f": {fixed}" if fixed else "")
        return f"`=` at column {column} is not JMESPath", hint
    if what == "Unknown token '-'":
        return _dash(column, source)
    if what.startswith("Unknown token "):
        message = f"`{token}` at column {column} is not part of JMESPath"
        return message, f'remove it, or quote the name that holds it: "a{token}b"'
    if what.startswith("Unclosed "):
        delimiter = token[:1]
        kind = {"'": "string", '"': "quoted name", "`": "literal"}.get(delimiter, "quote")
        message = f"the {kind} opened with {delimiter} at column {column} is never closed"
        hint = f"end it with {delimiter}"
        if delimiter == "'":
            hint += "; in YAML, write the whole expression in double quotes: \"'text'\""
        return message, hint
    if what.startswith("Bad token "):
        message = f"the `literal` at column {column} is not valid JSON"
        return message, "backquotes hold JSON (`1`, `[1, 2]`, `{\"a\": 1}`); a string is 'text'"
    if what in ("invalid token", "syntax error"):
        pair = source[column - 1 : column + 1] if source else ""
        shown = pair if pair in _OPERATORS else char
        message = f"`{shown}` cannot stand at column {column}" if shown else f"column {column}"
        hint = "an operator needs an expression on each side (a || b, a == b)"
        if what == "syntax error":
            hint = "a slice is [start:stop:step] with numbers only, e.g. [0:2]"
        elif source and source[max(0, column - 3) : column - 1] == ".[":
            hint = "an index follows the name directly: a[0], not a.[0]"
        return message, hint
    return None


def _expecting(
    expected: Tuple[str, ...], got: str, column: int, source: Optional[str]
) -> Tuple[str, str]:
    token = _TOKENS.get(got, got)
    if "lbrace" in expected and "lbracket" in expected:  # after a dot
        dot = column - 1
        if got == "dot":
            hint = "`..` is not valid JMESPath: one dot joins two names"
            if source:
                hint += f"; write {source[: column - 1] + source[column - 1 :].lstrip('.')}"
            return f"two dots in a row at column {dot}", hint
        if got == "eof":
            hint = "a dot must be followed by a name"
            if source and source.rstrip().rstrip("."):
                hint += f": write {source.rstrip().rstrip('.')}, or finish the path"
            return f"the expression ends with a dot (column {dot})", hint
        hint = "after a dot comes a name, [a, b] or {a: b}"
        if got == "literal":
            hint += "; a `literal` stands on its own: `x`, not a.`x`"
        return f"a name must follow the dot at column {dot}, not {token}", hint
    if "quoted_identifier" in expected:  # a key of {…}
        hint = 'write {key: value}; a key holding other characters is quoted: {"first-name": a}'
        return f"an object key is expected at column {column}, not {token}", hint
    wanted = " or ".join(_TOKENS.get(t, t) for t in expected)
    if expected == ("colon",):
        return f"`:` expected at column {column}, not {token}", "write {key: value, other: b}"
    hint = "check that every (, [ and { before it is closed, in the right order"
    return f"{wanted} expected at column {column}, not {token}", hint


def _unexpected(token: str, column: int, source: Optional[str]) -> Tuple[str, str]:
    if token in (")", "]", "}"):
        opening = {")": "(", "]": "[", "}": "{"}[token]
        return f"`{token}` at column {column} closes nothing", f"remove it, or add its {opening}"
    if token == ":":
        message = f"`:` at column {column} is outside {{…}}"
        return message, 'key: value pairs go inside {…}; in YAML, quote it all: "{a: b.c}"'
    if token == ",":
        return f"`,` at column {column} is outside a list or an object", "write [a, b] or {x: a}"
    before = source[: column - 1] if source else ""
    previous = re.search(r"(\S+)\s+$", before)
    if previous:
        left = previous.group(1)
        message = f"`{token}` at column {column} follows `{left}` with nothing joining them"
        hint = (
            f"join them with an operator: {left}.{token} for a path, {left} || {token} for "
            f'either; a key holding a space is quoted: "{left} {token}"'
        )
        return message, hint
    hint = "the expression before it is complete: join what follows with an operator, or remove it"
    return f"unexpected `{token}` at column {column}", hint


def _dash(column: int, source: Optional[str]) -> Tuple[str, str]:
    message = f"`-` at column {column}: a name holding `-` must be quoted"
    if not source or column > len(source):
        return message, 'quote it: "first-name"'
    if source[column - 2 : column - 1].isspace() or source[column : column + 1].isspace():
        message = f"`-` at column {column}: JMESPath has no arithmetic"
        return message, 'compute it in the assistant; a name holding `-` is quoted: "first-name"'
    start = end = column - 1
    while start > 0 and (source[start - 1].isalnum() or source[start - 1] in "_-"):
        start -= 1
    while end + 1 < len(source) and (source[end + 1].isalnum() or source[end + 1] in "_-"):
        end += 1
    fixed = f'{source[:start]}"{source[start : end + 1]}"{source[end + 1 :]}'
    return message, f"write {fixed} (in YAML: {_quoted(fixed)})"


def _ends_early(source: Optional[str]) -> Tuple[str, str]:
    if source:
        opened = _unclosed(source)
        if opened is not None:
            char, column = opened
            message = f"the expression ends before the {char} at column {column} is closed"
            return message, f"close it with {_CLOSING.get(char, char)}"
        tail = source.rstrip()
        for operator in _OPERATORS:
            if tail.endswith(operator):
                return (
                    f"the expression ends after `{operator}`",
                    "add what follows it, or remove it",
                )
    hint = "something is not finished: a bracket, a quote or an operator"
    return "the expression ends too early", hint


def _unclosed(source: str) -> Optional[Tuple[str, int]]:
    """The last bracket (or quote) still open at the end of ``source``, with its column."""
    stack: List[Tuple[str, int]] = []
    quote: Optional[Tuple[str, int]] = None
    escaped = False
    for index, char in enumerate(source):
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote[0]:
                quote = None
        elif char in "'\"`":
            quote = (char, index + 1)
        elif char in _CLOSING:
            stack.append((char, index + 1))
        elif char in ")]}" and stack and _CLOSING[stack[-1][0]] == char:
            stack.pop()
    if quote is not None:
        return quote
    return stack[-1] if stack else None
