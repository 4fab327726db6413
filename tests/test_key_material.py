"""Malformed key material is found when the channel is built, not by a 401 on every webhook:
``validate --check-env`` reports it, located and naming the variable, and start-up stops;
neither ever prints the value."""

from pathlib import Path
from typing import List, Tuple

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from generic_connector.auth import build_auth
from generic_connector.auth._common import KeyFormatError, decode_key
from generic_connector.cli import main
from generic_connector.errors import ConfigError
from generic_connector.startup import load_startup_channel

DISCORD = """\
name: discord
auth:
  type: ed25519
  public_key_env: DISCORD_PUBLIC_KEY
  header: X-Signature-Ed25519
  timestamp_header: X-Signature-Timestamp
  signed: "{timestamp}{body}"
request:
  sender: user.id
  text: data.name
"""

STANDARD = """\
name: standard
auth:
  type: hmac
  secret_env: WEBHOOK_SECRET
  secret_encoding: whsec
  header: webhook-signature
  prefix: "v1,"
  separator: " "
  encoding: base64
  signed: "{id}.{timestamp}.{body}"
  id_header: webhook-id
  timestamp_header: webhook-timestamp
request:
  sender: data.sender
  text: data.text
"""

# The example key of the Standard Webhooks specification.
GOOD_WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GOOD_HEX_KEY = "ab" * 32


def validate(
    tmp_path: Path, name: str, text: str, capsys: pytest.CaptureFixture
) -> Tuple[int, str]:
    path = tmp_path / f"{name}.yml"
    path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    status = main(["validate", "--check-env", str(path)])
    return status, capsys.readouterr().out


def test_validate_check_env_reports_an_ed25519_key_that_is_not_hex(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_PUBLIC_KEY", "not-hex")
    status, out = validate(tmp_path, "discord", DISCORD, capsys)
    assert status == 1
    assert out.splitlines()[0] == (
        f"{tmp_path}/discord.yml:1:1: discord: auth: the value of environment variable "
        "DISCORD_PUBLIC_KEY (a 32-byte Ed25519 public key in hex) is not hex (an even number "
        "of the digits 0-9 and a-f) (fix the secret's value)"
    )
    assert "not-hex" not in out
    monkeypatch.setenv("DISCORD_PUBLIC_KEY", GOOD_HEX_KEY)
    assert validate(tmp_path, "discord", DISCORD, capsys)[0] == 0


def test_validate_check_env_reports_an_ed25519_key_of_the_wrong_length(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_PUBLIC_KEY", "ab" * 31)
    status, out = validate(tmp_path, "discord", DISCORD, capsys)
    assert status == 1
    assert (
        "environment variable DISCORD_PUBLIC_KEY (a 32-byte Ed25519 public key in hex) decodes "
        "to 31 bytes, not 32" in out
    )


def test_validate_check_env_reports_a_whsec_secret_that_is_not_base64(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_this is not base64!")
    status, out = validate(tmp_path, "standard", STANDARD, capsys)
    assert status == 1
    assert out.splitlines()[0] == (
        f"{tmp_path}/standard.yml:1:1: standard: auth: the value of environment variable "
        "WEBHOOK_SECRET is not valid base64 (whsec_<base64>; it holds white space or a line "
        "break) (fix the secret's value)"
    )
    assert "this is not base64" not in out
    monkeypatch.setenv("WEBHOOK_SECRET", GOOD_WHSEC)
    assert validate(tmp_path, "standard", STANDARD, capsys)[0] == 0


def test_start_up_stops_on_a_malformed_key_naming_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_%%%%")
    with pytest.raises(ConfigError) as raised:
        load_startup_channel(yaml.safe_load(STANDARD), argv=[])
    text = str(raised.value)
    assert "environment variable WEBHOOK_SECRET is not valid base64 (whsec_<base64>)" in text
    assert "%%%%" not in text


def test_a_public_url_that_is_not_an_absolute_url_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    monkeypatch.setenv("TWILIO_WEBHOOK_URL", "example.com/webhooks/twilio/webhook")
    section = dict(
        type="hmac", secret_env="TWILIO_AUTH_TOKEN", header="X-Twilio-Signature",
        algorithm="sha1", encoding="base64", signed="{url}{form_params}",
        public_url_env="TWILIO_WEBHOOK_URL",
    )  # fmt: skip
    assert build_auth(section).problems() == [
        "the value of environment variable TWILIO_WEBHOOK_URL is not an absolute http(s) URL "
        "(https://host/path)"
    ]


@pytest.mark.parametrize(
    "value, encoding, size, expected",
    [
        ("00ff", "hex", None, b"\x00\xff"),
        ("0", "hex", None, "is not hex (an even number of the digits 0-9 and a-f)"),
        ("ab cd", "hex", None, "is not hex (an even number of the digits 0-9 and a-f; it holds "
         "white space or a line break)"),
        ("aGk=", "base64", None, b"hi"),
        ("aGk", "base64", None, "is not valid base64 (base64)"),
        ("aGk=\n", "base64", None, "is not valid base64 (base64; it holds white space or a line "
         "break)"),
        ("whsec_aGk=", "whsec", None, b"hi"),
        ("aGk=", "whsec", None, b"hi"),
        ("whsec_", "whsec", None, "decodes to nothing"),
        ("whpk_aGk=", "whpk", 2, b"hi"),
        ("whpk_aGk=", "whpk", 32, "decodes to 2 bytes, not 32"),
        ("é", "base64", None, "is not valid base64 (base64)"),
        ("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", "pem", None,
         "is not a PEM private key (-----BEGIN PRIVATE KEY----- ... -----END PRIVATE KEY-----)"),
    ],
)  # fmt: skip
def test_decode_key(value: str, encoding: str, size: int, expected: object) -> None:
    if isinstance(expected, bytes):
        assert decode_key(value, encoding, size) == expected
    else:
        with pytest.raises(KeyFormatError) as raised:
            decode_key(value, encoding, size)
        assert str(raised.value) == expected


def test_decode_key_reads_pem_private_keys() -> None:
    key = Ed25519PrivateKey.generate()
    plain = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    assert decode_key(plain, "pem") == plain.encode()
    locked = key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"passphrase")
    ).decode()
    with pytest.raises(KeyFormatError, match="is an encrypted PEM key"):
        decode_key(locked, "pem")


def test_no_problem_message_quotes_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "whsec_s3cr3t-value!"
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    monkeypatch.setenv("DISCORD_PUBLIC_KEY", "s3cr3t-value!")
    sections: List[dict] = [
        dict(type="hmac", secret_env="WEBHOOK_SECRET", secret_encoding="whsec", header="h"),
        dict(type="ed25519", public_key_env="DISCORD_PUBLIC_KEY", header="h"),
        dict(type="ed25519", public_key_env="DISCORD_PUBLIC_KEY", header="h", key_encoding="whpk"),
    ]
    for section in sections:
        problems = build_auth(section).problems()
        assert len(problems) == 1
        assert "s3cr3t" not in problems[0]
