"""The command line's manners: a closed pipe, usage errors, JSON errors, exit statuses and
shell completion, the same for every command."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from generic_connector.cli import _parser, completion_script, main

ROOT = Path(__file__).resolve().parent.parent
COMMAND = str(Path(sys.executable).with_name("generic-connector"))


def run(capsys: pytest.CaptureFixture, *argv: str) -> Tuple[int, str, str]:
    """The exit status (from a return or SystemExit), standard output and standard error."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_a_pipe_closed_early_ends_quietly_with_status_141() -> None:
    process = subprocess.Popen(
        [COMMAND, "validate", "mappings/"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader goes away before the first line is written
    errors = process.stderr.read().decode()
    assert process.wait(60) == 141
    assert errors == ""


def test_validate_into_head_prints_one_line_and_no_traceback() -> None:
    if shutil.which("head") is None:
        pytest.skip("no head")
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {COMMAND} validate --format json mappings/ | head -1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == "{\n"
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
    assert result.returncode in (0, 141)  # 141 when the output outran the pipe's buffer


def test_a_usage_error_prints_the_subcommands_usage(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "validate", str(tmp_path / "missing.yml"))
    assert (code, out) == (2, "")
    assert err.startswith("usage: generic-connector validate ")
    assert err.endswith(
        f"generic-connector validate: error: no such file or folder: {tmp_path}/missing.yml\n"
    )
    code, _, err = run(capsys, "mappings", "telegrm")
    assert code == 2 and err.startswith("usage: generic-connector mappings ")
    assert "did you mean 'telegram'?" in err
    code, _, err = run(capsys, "conversations", "list", "--channel", "c", "--url", "http://x")
    assert code == 2 and err.startswith("usage: generic-connector conversations list ")


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "--format", "json", "missing.yml"],
        ["validate", "--format=json", "--no-such-option"],
        ["mappings", "--format", "json", "telegrm"],
        ["conversations", "list", "--channel", "c", "--url", "http://x", "--format", "json"],
        ["deliveries", "list", "--url", "http://x", "--format", "json", "--limit", "many"],
    ],
)
def test_format_json_prints_json_on_errors_too(
    capsys: pytest.CaptureFixture, argv: List[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    error = json.loads(out)
    assert list(error) == ["error"] and error["error"]
    assert err == ""


def test_format_json_says_an_unreachable_store_in_json(capsys: pytest.CaptureFixture) -> None:
    url = "redis://:pw-not-shown@127.0.0.1:1/0"
    code, out, _ = run(
        capsys, "conversations", "list", "--channel", "c", "--url", url, "--format", "json"
    )
    assert code == 3
    assert "cannot be reached" in json.loads(out)["error"]
    assert "pw-not-shown" not in out
    code, out, _ = run(capsys, "deliveries", "list", "--url", url, "--format", "json")
    assert code == 3 and "cannot be reached" in json.loads(out)["error"]


@pytest.mark.parametrize(
    "body, headers, status, code",
    [
        ('{"sender": "u1", "message": "hi"}', [], 200, 0),
        ('{"message": "no sender"}', [], 422, 1),
        ("not json", [], 400, 1),
    ],
)
def test_dry_run_exits_1_when_the_channel_would_refuse_or_fail(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    body: str,
    headers: List[str],
    status: int,
    code: int,
) -> None:
    (tmp_path / "body.json").write_text(body)
    argv = ["dry-run", str(ROOT / "mappings" / "myio.yml"), "--body", str(tmp_path / "body.json")]
    exit_code, out, _ = run(capsys, *argv, *headers)
    assert (json.loads(out)["status"], exit_code) == (status, code)


def test_dry_run_of_a_signature_that_fails_exits_1(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    mapping = tmp_path / "signed.yml"
    mapping.write_text(
        "name: signed\n"
        "request: {sender: user, text: text}\n"
        "auth: {type: hmac, header: X-Signature, secret_env: SIGNED_SECRET}\n"
    )
    (tmp_path / "body.json").write_text('{"user": "u", "text": "hi"}')
    code, out, _ = run(
        capsys, "dry-run", str(mapping), "--body", str(tmp_path / "body.json"),
        "--env", "SIGNED_SECRET=s3cret", "--header", "X-Signature: wrong",
    )  # fmt: skip
    assert (code, json.loads(out)["status"]) == (1, 401)


def test_completion_scripts_list_every_command_and_parse(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "completion", "bash")
    assert code == 0 and out == completion_script(_parser(), "bash")
    for command in ("validate", "dry-run", "mappings", "deliveries", "conversations", "completion"):
        assert command in out
    assert '"/validate --format") words="text json"' in out
    code, zsh, _ = run(capsys, "completion", "zsh")
    assert code == 0 and zsh.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    if shutil.which("bash") is None:
        return
    script = out + (
        'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); '
        '_generic_connector; echo "${COMPREPLY[*]}"; }\n'
        "complete_words generic-connector va\n"
        "complete_words generic-connector validate --fo\n"
        "complete_words generic-connector validate --format ''\n"
        "complete_words generic-connector deliveries l\n"
        "complete_words generic-connector completion ''\n"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.stderr == ""
    assert result.stdout.splitlines() == ["validate", "--format", "text json", "list", "bash zsh"]
