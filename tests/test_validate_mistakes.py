"""Mistakes that used to pass ``validate`` and then stop ``rasa run`` with a traceback, or that
were reported in a parser's words: each is a located finding in plain words, and start-up
refuses it with the same one-line message."""

import inspect
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from generic_connector.cli import main
from generic_connector.config import check_channel
from generic_connector.errors import ConfigError
from generic_connector.explain import explain_expression_error, explain_findings
from generic_connector.expressions import ExpressionError, compile_expression
from generic_connector.startup import (
    RASA_CHANNELS,
    credentials_on_command_line,
    forget_started_channels,
    load_startup_channel,
)
from tests.rasa_process import ENV, RASA, ROOT

SHOP = "  request: {sender: sender, text: message}\n"


def run(capsys: pytest.CaptureFixture, *args: str) -> Tuple[int, List[str]]:
    code = main(list(args))
    return code, capsys.readouterr().out.splitlines()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(autouse=True)
def fresh_start_up() -> Iterator[None]:
    """Each test starts as a new rasa run process would: no generic channel built yet."""
    forget_started_channels()
    yield
    forget_started_channels()


# --- validate -----------------------------------------------------------------------------


def test_two_channels_with_one_name(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "credentials.yml",
        f"generic_connector.channels.a:\n  name: shop\n{SHOP}"
        f"generic_connector.channels.b:\n  name: shop\n{SHOP}",
    )
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert out == [
        f"{path}:4:1: shop: two generic channels are named 'shop' (each generic channel needs "
        "a name of its own: it is its URL /webhooks/<name>/)",
        "1 file: 0 valid, 1 invalid, 1 findings",
    ]


def test_names_that_differ_only_in_dash_and_underscore(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "credentials.yml",
        f"generic_connector.channels.a:\n  name: my-shop\n{SHOP}"
        f"generic_connector.channels.b:\n  name: my_shop\n{SHOP}",
    )
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (
        1,
        f"{path}:4:1: my_shop: generic channels 'my-shop' and 'my_shop' cannot run side by "
        "side (Rasa's web server tells them apart by the name with '-' read as '_': rename one)",
    )


def test_a_channel_named_like_rasas_own_in_the_same_file(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "credentials.yml",
        f"rest:\ngeneric_connector.channels.rest:\n  name: rest\n{SHOP}",
    )
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert out[0] == (
        f"{path}:2:1: rest: generic channel 'rest' takes the name of Rasa's own rest: channel "
        "in this file (both would serve /webhooks/rest/: rename the generic channel "
        "(name: my-rest) or remove the rest: entry)"
    )


def test_a_rasa_channel_name_alone_is_fine(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """The ready telegram mapping is named telegram: without Rasa's telegram: beside it, fine."""
    path = write(
        tmp_path,
        "credentials.yml",
        f"rest:\ngeneric_connector.channels.tg:\n  name: telegram\n{SHOP}",
    )
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (0, f"{path}: ok (telegram)")


def test_rasa_channel_names_are_rasas_own() -> None:
    from rasa.core.channels import BUILTIN_CHANNELS

    assert set(BUILTIN_CHANNELS) == RASA_CHANNELS


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("generic_connector.channel.shop", "generic_connector.channels.shop"),
        ("generic-connector.channels.shop", "generic_connector.channels.shop"),
        ("generic_connector.GenericChanel", "generic_connector.GenericChannel"),
        ("generic_connector.channels", "generic_connector.channels.<label>"),
    ],
)
def test_misspelt_generic_key(
    capsys: pytest.CaptureFixture, tmp_path: Path, key: str, suggestion: str
) -> None:
    path = write(tmp_path, "credentials.yml", f"{key}:\n  name: shop\n{SHOP}")
    code, out = run(capsys, "validate", path)
    assert code == 1  # not "ok (no generic channels)"
    assert out[0] == (
        f"{path}:1:1: {key}: unknown channel key: rasa run would stop, finding no channel "
        f"class for it (did you mean '{suggestion}'?)"
    )


def test_a_label_with_a_dot(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(tmp_path, "credentials.yml", f"generic_connector.channels.a.b:\n  name: a\n{SHOP}")
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (
        1,
        f"{path}:1:1: generic_connector.channels.a.b: 'generic_connector.channels.a.b' is not a "
        "generic channel key: its label must be one word (one label after "
        "generic_connector.channels., e.g. generic_connector.channels.shop)",
    )


def test_other_dotted_keys_are_left_alone(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(tmp_path, "credentials.yml", "addons.custom.MyChannel:\n  token: x\nrest:\n")
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (0, f"{path}: ok (no generic channels)")


MAPPING = "name: m\nrequest:\n  sender: user.id\n  text: message.text\n"


@pytest.mark.parametrize(
    "text, finding",
    [
        (
            "name: m\nrequest:\n  sender: user.id\ntext: message.text\n",
            ":4:1: m.text: unknown key 'text' (text belongs under request)",
        ),
        (
            MAPPING + "  body: '{a: b}'\n",
            ":5:3: m.request.body: unknown key 'body' (body belongs under response)",
        ),
        (
            MAPPING + "max_body: 1000\n",
            ":5:1: m.max_body: unknown key 'max_body' (max_body belongs under limits)",
        ),
        (
            MAPPING + "response:\n  name: x\n",
            ":6:3: m.response.name: unknown key 'name' "
            "(name belongs at the top level of the channel)",
        ),
    ],
    ids=["text at the top level", "body under request", "max_body at the top", "name in response"],
)
def test_key_at_the_wrong_level(
    capsys: pytest.CaptureFixture, tmp_path: Path, text: str, finding: str
) -> None:
    path = write(tmp_path, "m.yml", text)
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert path + finding in out


def test_a_typo_still_gets_did_you_mean(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(tmp_path, "m.yml", MAPPING + "respones:\n  status: 200\n")
    code, out = run(capsys, "validate", path)
    assert out[0] == f"{path}:5:1: m.respones: unknown key 'respones' (did you mean 'response'?)"


@pytest.mark.parametrize(
    "expression, message, hint",
    [
        (
            "data..customer",
            "two dots in a row at column 5",
            "`..` is not valid JMESPath: one dot joins two names; write data.customer",
        ),
        (
            "message text",
            "`text` at column 9 follows `message` with nothing joining them",
            "join them with an operator: message.text for a path, message || text for either; "
            'a key holding a space is quoted: "message text"',
        ),
        (
            "user.",
            "the expression ends with a dot (column 5)",
            "a dot must be followed by a name: write user, or finish the path",
        ),
        (
            "join('', [a, b]",
            "the expression ends before the ( at column 5 is closed",
            "close it with )",
        ),
        (
            "user.first-name",
            "`-` at column 11: a name holding `-` must be quoted",
            """write user."first-name" (in YAML: 'user."first-name"')""",
        ),
        ("type = 'text'", "`=` at column 6 is not JMESPath", "compare with ==: type == 'text'"),
        (
            "'hello",
            "the string opened with ' at column 1 is never closed",
            "end it with '; in YAML, write the whole expression in double quotes: \"'text'\"",
        ),
    ],
)
def test_jmespath_syntax_errors_in_plain_words(expression: str, message: str, hint: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        compile_expression(expression)
    assert explain_expression_error(raised.value) == (message, hint)
    # A channel's finding carries the error itself, and says the same.
    document = {"name": "m", "request": {"sender": expression, "text": "text"}}
    _, [finding], _ = check_channel(document, "m")
    assert explain_findings([finding], document)[0].message.endswith(message)


def test_jmespath_error_located_with_its_fix(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(tmp_path, "m.yml", "name: m\nrequest:\n  sender: data..customer\n  text: t\n")
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (
        1,
        f"{path}:3:3: m.request.sender: expression does not compile: two dots in a row at column "
        "5 (`..` is not valid JMESPath: one dot joins two names; write data.customer)",
    )


def test_unquoted_braces_that_break_yaml(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(tmp_path, "m.yml", MAPPING + "response:\n  body: {replies: messages[].text}\n")
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (
        1,
        f"{path}:6:27: : not valid YAML: expected ',' or '}}', but got '[' (an expression "
        'starting with { must be quoted in YAML: body: "{replies: messages[].text}")',
    )


def test_unquoted_braces_that_yaml_reads_as_an_object(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(tmp_path, "m.yml", MAPPING + "  metadata: {customer: data.customer.name}\n")
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (
        1,
        f"{path}:5:3: m.request.metadata: must be a string, got an object (an expression "
        "starting with { must be quoted in YAML, or YAML reads it as an object: "
        'metadata: "{customer: data.customer.name}")',
    )


def test_unquoted_negation_that_yaml_reads_as_a_tag(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(tmp_path, "m.yml", MAPPING + "  ignore:\n    - name: n\n      when: !(a.b)\n")
    code, out = run(capsys, "validate", path)
    assert out[0].endswith('(an expression starting with ! must be quoted in YAML: when: "!(a.b)")')


TELEGRAM_ENV = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_SECRET_TOKEN")


@pytest.fixture
def no_telegram_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TELEGRAM_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CI", raising=False)


def test_check_env_reports_each_unset_variable(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_telegram_env: None,
) -> None:
    path = write(
        tmp_path, "credentials.yml", "generic_connector.channels.tg:\n  mapping: telegram\n"
    )
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (
        0,
        f"{path}: ok (telegram; reads TELEGRAM_BOT_TOKEN, TELEGRAM_SECRET_TOKEN)",
    )
    code, out = run(capsys, "validate", "--check-env", path)
    assert code == 1
    assert out[:2] == [
        f"{path}:1:1: telegram: environment variable {name} is not set "
        "(the mapping reads it; set it before rasa run starts)"
        for name in TELEGRAM_ENV
    ]
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("TELEGRAM_SECRET_TOKEN", "s3cret")
    assert run(capsys, "validate", "--check-env", path)[0] == 0


def test_check_env_is_on_in_ci_for_credentials_files(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_telegram_env: None,
) -> None:
    path = write(
        tmp_path, "credentials.yml", "generic_connector.channels.tg:\n  mapping: telegram\n"
    )
    mapping = str(ROOT / "mappings" / "telegram.yml")
    monkeypatch.setenv("CI", "true")
    code, out = run(capsys, "validate", path)
    assert code == 1 and "environment variable TELEGRAM_BOT_TOKEN is not set" in out[0]
    # A mapping file alone is not what a deployment starts: checked only when asked.
    assert run(capsys, "validate", mapping)[0] == 0
    assert run(capsys, "validate", "--check-env", mapping)[0] == 1
    assert run(capsys, "validate", "--no-check-env", path)[0] == 0
    monkeypatch.setenv("CI", "false")
    assert run(capsys, "validate", path)[0] == 0


# --- rasa run start-up, as GenericChannel.from_credentials builds a channel ---------------


def startup_error(entry: Dict[str, Any], argv: Optional[List[str]] = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_startup_channel(entry, argv=argv or [])
    return str(raised.value)


def test_start_up_refuses_a_second_channel_of_one_name() -> None:
    entry = {"name": "shop", "request": {"sender": "sender", "text": "message"}}
    assert load_startup_channel(entry, argv=[]).name == "shop"
    assert startup_error(entry) == (
        "<credentials>: shop: two generic channels are named 'shop' (each generic channel "
        "needs a name of its own: it is its URL /webhooks/<name>/)"
    )


def test_start_up_refuses_rasas_own_channel_name_in_the_same_file(tmp_path: Path) -> None:
    credentials = write(
        tmp_path, "credentials.yml", "rest:\ngeneric_connector.channels.rest:\n  name: rest\n"
    )
    entry = {"name": "rest", "request": {"sender": "sender", "text": "message"}}
    assert startup_error(entry, ["run", "--credentials", credentials]) == (
        f"{credentials}: rest: generic channel 'rest' takes the name of Rasa's own rest: "
        "channel in this file (both would serve /webhooks/rest/: rename the generic channel "
        "(name: my-rest) or remove the rest: entry)"
    )
    forget_started_channels()
    alone = write(tmp_path, "alone.yml", "generic_connector.channels.rest:\n  name: rest\n")
    assert load_startup_channel(entry, argv=["run", f"--credentials={alone}"]).name == "rest"


def test_start_up_words_findings_as_validate_does(no_telegram_env: None) -> None:
    broken = {"name": "m", "request": {"sender": "data..customer", "text": "t"}}
    assert startup_error(broken) == (
        "<credentials>: m.request.sender: expression does not compile: two dots in a row at "
        "column 5 (`..` is not valid JMESPath: one dot joins two names; write data.customer)"
    )
    wrong_level = {"name": "m", "request": {"sender": "s"}, "text": "t"}
    assert "<credentials>: m.text: unknown key 'text' (text belongs under request)" in (
        startup_error(wrong_level).splitlines()
    )
    assert startup_error({"mapping": "telegram"}).splitlines() == [
        f"<credentials>: telegram: environment variable {name} is not set "
        "(the mapping reads it; set it before rasa run starts)"
        for name in TELEGRAM_ENV
    ]


def test_the_credentials_file_on_rasas_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = Path(write(tmp_path, "given.yml", "rest:\n"))
    monkeypatch.chdir(tmp_path)
    assert credentials_on_command_line(["run", "--credentials", str(given)]) == given
    assert credentials_on_command_line(["run", "--cred", str(given)]) == given
    assert credentials_on_command_line(["run", "--port", "5005"]) is None  # no credentials.yml
    Path("credentials.yml").write_text("rest:\n")
    assert credentials_on_command_line(["run", "--credentials", "missing.yml"]) == Path(
        "credentials.yml"
    )
    assert credentials_on_command_line(["train"]) is None
    assert credentials_on_command_line(["run", "actions"]) is None


# --- The same through a real rasa run -----------------------------------------------------


def _wired() -> bool:
    """Whether GenericChannel.from_credentials builds channels with load_startup_channel."""
    from generic_connector.channel import GenericChannel

    return "load_startup_channel" in inspect.getsource(GenericChannel.from_credentials)


STARTUP_MISTAKES = {
    "duplicate": (
        f"generic_connector.channels.a:\n  name: shop\n{SHOP}"
        f"generic_connector.channels.b:\n  name: shop\n{SHOP}",
        "<credentials>: shop: two generic channels are named 'shop'",
    ),
    "rasa's own name": (
        f"rest:\ngeneric_connector.channels.rest:\n  name: rest\n{SHOP}",
        ": rest: generic channel 'rest' takes the name of Rasa's own rest: channel in this file",
    ),
    "two dots": (
        "generic_connector.GenericChannel:\n  name: m\n"
        "  request: {sender: data..customer, text: message}\n",
        "two dots in a row at column 5 (`..` is not valid JMESPath",
    ),
    "misspelt key": (
        f"generic_connector.channel.shop:\n  name: shop\n{SHOP}",
        "Failed to find input channel class for 'generic_connector.channel.shop'",
    ),
}


@pytest.mark.e2e
@pytest.mark.xfail(
    not _wired(),
    reason="generic_connector/channel.py does not build channels with load_startup_channel yet",
    strict=True,
)
def test_rasa_run_stops_with_one_line_messages(model: Path, tmp_path: Path) -> None:
    processes = {}
    for name, (credentials, _) in STARTUP_MISTAKES.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yml"
        path.write_text(credentials)
        log = (tmp_path / f"{path.stem}.log").open("wb")
        processes[name] = subprocess.Popen(
            [RASA, "run", "--model", str(model), "--credentials", str(path), "--port", "0"],
            cwd=ROOT, env={**ENV, "RASA_TELEMETRY_ENABLED": "false"}, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 180
    for name, process in processes.items():
        try:
            process.wait(max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"{name}: rasa run did not stop")
        output = (tmp_path / f"{name.replace(' ', '_')}.log").read_text(errors="replace")
        assert process.returncode != 0, (name, output[-2000:])
        assert STARTUP_MISTAKES[name][1] in output, (name, output[-2000:])
        assert "Traceback" not in output, (name, output[-3000:])


def test_an_answer_that_fails_with_some_bot_messages_is_found(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # Two top-level elements when the bot sends more than one message: no single XML root.
    # The test case's own replies (one text) render; the sample replies do not.
    path = write(
        tmp_path,
        "sms.yml",
        "name: sms\n"
        "request: {sender: from, text: body}\n"
        "response:\n"
        "  content_type: application/xml\n"
        '  body: "messages[].{Message: text}"\n'
        "tests:\n"
        "  - name: a text\n"
        "    body: {from: '+15550001', body: hi}\n"
        "    replies: [{text: Hello}]\n"
        "    expect: {status: 200}\n",
    )
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert out[0].startswith(f"{path}:3:1: sms.response: the answer could not be rendered: ")
    assert out[0].endswith(
        "(test 'a text' with a text, buttons, an image and a custom message as the bot's "
        "replies) (Rasa would handle the message and the platform get no answer it can use)"
    )
