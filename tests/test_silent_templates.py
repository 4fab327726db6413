"""``validate`` warns about silent templates: answer and outbound expressions reading a field
that is null in every reply and test case (``always-null``), without failing the file."""

import json
from pathlib import Path
from typing import List, Tuple

import pytest

from generic_connector.cli import main, silent
from generic_connector.cli.validate import validate_file
from generic_connector.expressions import compile_expression

MAPPING = """\
name: m
request:
  sender: sender
  text: message
  metadata: metadata
response:
  body: "{reply: join(' ', messages[].txt)}"
tests:
  - name: a message
    body: {"sender": "u1", "message": "hi", "metadata": {"channel": "web"}}
    expect: {sender: u1}
"""

OUTBOUND = """\
name: m
request:
  sender: sender
  text: message
  metadata: metadata
outbound:
  text:
    url: "'https://api.example.com/send'"
    body: "{to: recipient, text: message.text, channel: metadata.chanel, page: metadata.page}"
tests:
  - name: from the web
    body: {"sender": "u1", "message": "hi", "metadata": {"channel": "web"}}
    expect: {sender: u1}
  - name: from a page
    body: {"sender": "u1", "message": "hi", "metadata": {"channel": "web", "page": "/help"}}
    expect: {sender: u1}
"""


def validate(capsys: pytest.CaptureFixture, path: Path, *options: str) -> Tuple[int, List[str]]:
    code = main(["validate", *options, str(path)])
    return code, capsys.readouterr().out.splitlines()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yml"
    path.write_text(text)
    return path


def test_a_misspelt_answer_field_is_a_warning_and_validate_passes(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(tmp_path, MAPPING)
    code, out = validate(capsys, path)
    assert code == 0
    assert out == [
        f"{path}:7:3: warning: m.response.body: messages[].txt is null for every reply (bot "
        "messages have text, buttons, quick_replies, image, attachment, custom, elements, "
        "recipient_id; did you mean text?)",
        f"{path}: ok (m, 1 test case passed)",
        "1 file: 1 valid, 0 invalid, 1 findings",
    ]


def test_strict_makes_a_warning_fail_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MAPPING)
    assert validate_file(path).valid is True
    report = validate_file(path, strict=True)
    assert report.valid is False
    assert [f.code for f in report.findings] == ["always-null"]
    assert [f.severity for f in report.findings] == ["warning"]


def test_warnings_are_listed_apart_in_json(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(tmp_path, MAPPING)
    code, out = validate(capsys, path, "--format", "json")
    [report] = json.loads("\n".join(out))["files"]
    assert (code, report["valid"], report["findings"]) == (0, True, [])
    assert report["warnings"] == [
        {
            "file": str(path),
            "line": 7,
            "column": 3,
            "path": "m.response.body",
            "message": "messages[].txt is null for every reply",
            "hint": "bot messages have text, buttons, quick_replies, image, attachment, custom, "
            "elements, recipient_id; did you mean text?",
        }
    ]


def test_the_right_field_gives_no_warning(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(tmp_path, MAPPING.replace("messages[].txt", "messages[].text"))
    code, out = validate(capsys, path)
    assert (code, out) == (
        0,
        [f"{path}: ok (m, 1 test case passed)", "1 file: 1 valid, 0 invalid, 0 findings"],
    )


def test_a_misspelt_bot_message_key_is_found_without_test_cases(tmp_path: Path) -> None:
    path = write(tmp_path, MAPPING.split("tests:")[0])
    [finding] = validate_file(path).findings
    assert (finding.path, finding.message) == (
        "m.response.body",
        "messages[].txt is null for every reply",
    )


def test_an_outbound_field_null_in_every_test_case_is_a_warning_one_null_in_some_is_not(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(tmp_path, OUTBOUND)
    code, out = validate(capsys, path)
    assert code == 0
    assert out == [
        f"{path}:9:5: warning: m.outbound.text.body: metadata.chanel is null in every test "
        "case (metadata has channel, page; did you mean channel?)",
        f"{path}: ok (m, 2 test cases passed)",
        "1 file: 1 valid, 0 invalid, 1 findings",
    ]


def test_a_path_through_a_string_says_so(tmp_path: Path) -> None:
    text = OUTBOUND.replace("metadata.chanel", "recipient.id")
    [finding] = validate_file(write(tmp_path, text)).findings
    assert (finding.message, finding.hint) == (
        "recipient.id is null in every test case",
        "recipient is a string there, not an object",
    )


def test_alternatives_and_conditions_may_be_null(tmp_path: Path) -> None:
    text = OUTBOUND.replace(
        "metadata.chanel",
        "metadata.chanel || metadata.channel, x: metadata.kind == 'a', y: not_null(metadata.z)",
    )
    assert validate_file(write(tmp_path, text)).findings == []


def test_a_misspelt_name_of_the_data_and_of_the_reply_address(tmp_path: Path) -> None:
    text = OUTBOUND.replace("metadata.chanel", "reply_to.thred, m: metdata.channel")
    assert [(f.message, f.hint) for f in validate_file(write(tmp_path, text)).findings] == [
        (
            "reply_to.thred is null for every reply",
            "reply addresses have user, conversation, thread; did you mean thread?",
        ),
        (
            "metdata is null for every reply",
            "the data is {message, recipient, event, metadata, reply_to}; did you mean metadata?",
        ),
    ]


def test_the_ready_mappings_give_no_warning() -> None:
    root = Path(__file__).resolve().parent.parent
    warnings = [
        str(finding)
        for path in sorted((root / "mappings").glob("*.yml"))
        for finding in validate_file(path).findings
        if finding.severity == "warning"
    ]
    assert warnings == []


@pytest.mark.parametrize(
    "expression, paths",
    [
        ("messages[].txt", ["messages", "messages[].txt"]),
        ("messages[*].text", ["messages", "messages[*].text"]),
        ("messages[0].custom.kind", ["messages", "messages[0].custom", "messages[0].custom.kind"]),
        (
            "{a: request.data.id, b: [sender]}",
            ["request", "request.data", "request.data.id", "sender"],
        ),
        ("messages[?image].image", ["messages", "messages[?].image", "messages[?].image"]),
        (
            "messages[].buttons[].title",
            ["messages", "messages[].buttons", "messages[].buttons[].title"],
        ),
        ("request | data", ["request", "request.data"]),
        ("messages[].text | [0].x", ["messages", "messages[].text"]),
        ("sort_by(messages, &text)", ["messages"]),
        ("`null`", []),
    ],
)
def test_the_paths_an_expression_reads(expression: str, paths: List[str]) -> None:
    tree = compile_expression(expression).parsed
    assert [silent.shown(read.path) for read in silent.reads(tree)] == paths
