"""The config loader and validator: located, complete findings; no stack traces."""

import base64
import json
from pathlib import Path
from typing import List

import pytest

from generic_connector.auth import AUTH_SCHEMES
from generic_connector.config import SCHEMA, SCHEMA_PATH, check_channel, load_channel, load_yaml
from generic_connector.errors import ConfigError
from tests.conftest import API_TOKENS, VERIFY_TOKENS
from tests.signing import WEBHOOK_SECRETS

ROOT = Path(__file__).resolve().parent.parent


def findings_of(entry: object, base_dir: Path = ROOT) -> List[str]:
    config, findings, _ = check_channel(entry, "label", base_dir=base_dir)
    assert config is None
    return [str(f) for f in findings]


def test_shipped_mappings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in {**VERIFY_TOKENS, **API_TOKENS, **WEBHOOK_SECRETS}:
        monkeypatch.setenv(name, WEBHOOK_SECRETS.get(name, "t"))
    # Keys are checked for their format: 32 bytes, in hex and in base64.
    monkeypatch.setenv("DISCORD_PUBLIC_KEY", "ab" * 32)
    monkeypatch.setenv("TELNYX_PUBLIC_KEY", base64.b64encode(bytes(32)).decode())
    for path in sorted((ROOT / "mappings").glob("*.yml")):
        config = load_channel({"mapping": str(path)})
        assert config.name == path.stem


def test_inline_keys_replace_the_mapping_files_keys() -> None:
    config = load_channel({"mapping": str(ROOT / "mappings/rest.yml"), "name": "other"})
    assert config.name == "other"
    assert config.request.default_input_channel == "other"
    assert config.request.text.source == "message"


def test_an_entry_merges_over_the_mapping_key_by_key() -> None:
    """An object of the entry merges with the mapping's: ``request.message_id`` alone keeps
    the mapping's sender and text; null removes a key."""
    mapping = str(ROOT / "mappings/myio.yml")
    config = load_channel({"mapping": mapping, "request": {"message_id": "id"}})
    assert config.request.sender.source == "sender"
    assert config.request.text.source == "text || message"
    assert config.request.message_id is not None
    assert config.request.message_id.source == "id"
    assert config.request.metadata is not None
    config = load_channel({"mapping": mapping, "request": {"metadata": None}})
    assert config.request.metadata is None
    assert config.request.sender.source == "sender"


def test_an_auth_section_replaces_the_mappings_whole() -> None:
    """An auth scheme's keys belong together: the Google Chat mapping checks certificates
    (x509_url); an entry giving jwks_url must not end up with both key sources."""
    mapping = str(ROOT / "mappings/google-chat.yml")
    own = {"type": "jwt", "algorithms": ["RS256"], "jwks_url": "http://127.0.0.1:1/jwks",
           "issuer": "chat@system.gserviceaccount.com", "audience_env": "A"}  # fmt: skip
    checked = check_channel({"mapping": mapping, "auth": own}, "t")
    assert checked.document["auth"] == own
    assert checked.findings == []
    other = {"type": "basic", "username_env": "U", "password_env": "P"}
    telegram = str(ROOT / "mappings/telegram.yml")
    assert check_channel({"mapping": telegram, "auth": other}, "t").document["auth"] == other


def test_a_finding_in_a_merged_section_points_at_the_file_its_value_comes_from(
    tmp_path: Path,
) -> None:
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(
        "generic_connector.GenericChannel:\n"
        f"  mapping: {ROOT / 'mappings/myio.yml'}\n"
        "  request:\n"
        "    message_id: id..x\n"
    )
    entry = load_yaml(credentials)["generic_connector.GenericChannel"]
    [finding] = check_channel(entry, "label").findings
    assert (finding.path, finding.file, finding.line, finding.column) == (
        "myio.request.message_id",
        str(credentials),
        4,
        5,
    )
    entry["request"] = {"text": None}  # the mapping's text removed: said at the entry's key
    [finding] = check_channel(entry, "label").findings
    assert (str(finding.message), finding.file, finding.line) == (
        "missing required key 'text'",
        str(credentials),
        3,
    )


def test_unknown_key_gets_a_suggestion() -> None:
    entry = {"name": "x", "request": {"sender": "a", "text": "b", "metdata": "c"}}
    assert findings_of(entry) == [
        "<credentials>: x.request.metdata: unknown key 'metdata' (did you mean 'metadata'?)"
    ]


def test_missing_required_keys_are_all_reported() -> None:
    assert findings_of({"request": {"sender": "a"}}) == [
        "<credentials>: label.name: missing required key 'name' (add it)",
        "<credentials>: label.request.text: missing required key 'text' (add it)",
    ]


def test_bad_expression_names_the_parser_message_and_column() -> None:
    [finding] = findings_of({"name": "x", "request": {"sender": "a.b c", "text": "t"}})
    assert finding.startswith(
        "<credentials>: x.request.sender: expression does not compile: Unexpected token: c"
    )
    assert finding.endswith("Unexpected token: c at column 5 (fix the JMESPath expression)")


def test_wrong_types_and_names() -> None:
    entry = {"name": "x y", "request": {"sender": 1, "text": "t"}, "response": {"status": "ok"}}
    assert findings_of(entry) == [
        "<credentials>: x y.name: 'x y' does not match ^[A-Za-z0-9][A-Za-z0-9_-]*$ "
        "(use letters, digits, '-' and '_': the name becomes the URL /webhooks/<name>/)",
        "<credentials>: x y.request.sender: must be a string, got a number",
        "<credentials>: x y.response.status: must be an integer, got a string",
    ]


def test_missing_mapping_file() -> None:
    assert findings_of({"mapping": "mappings/nope.yml"}) == [
        "<credentials>: mapping: mapping file 'mappings/nope.yml' not found "
        "(relative paths start from the directory rasa run is started in)"
    ]


def test_entry_that_is_not_a_mapping() -> None:
    assert findings_of(["a"]) == ["<credentials>: label: must be a mapping of keys, got a list"]


def test_positions_come_from_the_file_that_holds_the_key(tmp_path: Path) -> None:
    (tmp_path / "m.yml").write_text("name: m\nrequest:\n  sender: a\n  text: b[\n")
    (tmp_path / "credentials.yml").write_text(
        "generic_connector.GenericChannel:\n  mapping: m.yml\n  response:\n    stauts: 200\n"
    )
    entry = load_yaml(tmp_path / "credentials.yml")["generic_connector.GenericChannel"]
    config, findings, _ = check_channel(entry, base_dir=tmp_path)
    located = [(Path(f.file).name, f.line, f.column, f.path) for f in findings]
    assert located == [
        ("m.yml", 4, 3, "m.request.text"),
        ("credentials.yml", 4, 5, "m.response.stauts"),
    ]


@pytest.mark.parametrize(
    "content, code, words",
    [
        (b"name: [unclosed\n", "invalid-yaml", "not valid YAML"),
        (b"\xff\xfe\x00binary", "unreadable-file", "not a text file"),
        (b"a: 1\na: 2\n", "invalid-yaml", "duplicate key 'a'"),
    ],
)
def test_unreadable_yaml_is_one_finding(
    tmp_path: Path, content: bytes, code: str, words: str
) -> None:
    path = tmp_path / "bad.yml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_yaml(path)
    [finding] = raised.value.findings
    assert (finding.file, finding.code) == (str(path), code)
    assert words in finding.message  # what a person reads: the key YAML found twice


def test_start_up_names_a_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "t")
    monkeypatch.setenv("TELEGRAM_SECRET_TOKEN", "t")
    load_channel({"mapping": str(ROOT / "mappings/telegram.yml")}, "generic channel")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    with pytest.raises(ConfigError) as raised:
        load_channel({"mapping": str(ROOT / "mappings/telegram.yml")}, "generic channel")
    assert str(raised.value) == (
        "<credentials>: telegram: environment variable TELEGRAM_BOT_TOKEN is not set "
        "(the mapping reads it; set it before rasa run starts)"
    )
    for name in ("WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_VERIFY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="environment variables WHATSAPP_ACCESS_TOKEN, "):
        load_channel({"mapping": str(ROOT / "mappings/whatsapp.yml")}, "generic channel")


def test_broken_channels_give_findings_with_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    request = {"sender": "data..customer", "text": "nope(a)", "input_channel": "x"}
    entry = {"name": "c", "request": request, "respones": {"status": 200}}
    _, findings, _ = check_channel(entry, "c")
    assert sorted((f.code, f.path) for f in findings) == [
        ("expression-invalid", "c.request.text"),
        ("expression-syntax", "c.request.sender"),
        ("unknown-key", "c.respones"),
    ]
    [syntax] = [f for f in findings if f.code == "expression-syntax"]
    assert syntax.cause is not None and getattr(syntax.cause, "column", None) == 6
    monkeypatch.delenv("GENERIC_CONNECTOR_UNSET", raising=False)
    entry = {"name": "c", "request": {"sender": "a", "text": "env('GENERIC_CONNECTOR_UNSET')"}}
    _, [unset], _ = check_channel(entry, "c", require_env=True)
    assert (unset.code, unset.path) == ("missing-env", "c")


def test_schema_json_holds_every_registry_as_the_loader_checks_it() -> None:
    """Editors read schema.json; `generic-connector schema --write` makes it anew."""
    on_disk = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert on_disk == SCHEMA
    assert set(AUTH_SCHEMES) <= set(json.dumps(on_disk["properties"]["auth"]).split('"'))
    assert on_disk["properties"]["store"]["properties"]["type"]["enum"] == ["memory", "redis"]


def test_an_unknown_auth_type_or_store_is_a_configuration_error() -> None:
    for extra in ({"auth": {"type": "nope"}}, {"store": {"type": "nope"}}):
        entry = {"name": "x", "request": {"sender": "s", "text": "t"}, **extra}
        config, findings, _ = check_channel(entry)
        assert config is None
        assert findings, extra


def test_an_allow_hosts_entry_that_is_no_host_or_port_is_a_finding() -> None:
    entry = {
        "name": "h",
        "request": {"sender": "s", "text": "t"},
        "outbound": {
            "allow_hosts": ["host:abc", "api.example.com:8443"],
            "text": {"url": "`https://api.example.com/x`", "body": "{t: message.text}"},
        },
    }
    config, findings, _ = check_channel(entry, "h")
    assert config is None
    assert [(f.path, f.message) for f in findings] == [
        ("h.outbound.allow_hosts[0]", "'host:abc' is not a host or host:port")
    ]
