"""wecom_decrypt() and parse_xml(), through the expressions that call them.

Expected values are written out from the documents that publish them (tests/payloads/wecom/
SOURCES.md): WeCom's "加解密方案说明" worked example (corp id wx5823bf96d3bd56c7, token QDG6eK,
EncodingAESKey jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C, the message's msg_encrypt and its
plaintext), and the URL verification request of WeCom's sample library (its echostr, whose
plaintext 1616140317555161061 was obtained with Python's ``cryptography`` package, as
SOURCES.md says). Hostile ciphertexts are encrypted here with ``cryptography`` itself, never
with the code under test.
"""

import base64
import json
import time
from pathlib import Path
from typing import Any, Optional

import jmespath
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from jmespath.visitor import Options

from generic_connector import defaults, xmlbody
from generic_connector.expressions import EvaluationError, Expression, ExpressionError
from generic_connector.functions import FUNCTIONS, Scope

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "wecom"

# The documented example (90968, 举例说明).
CORP_ID = "wx5823bf96d3bd56c7"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
MSG_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3Qczc"
    "dCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLj"
    "vd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMn"
    "vw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k"
    "22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2Yoy"
    "yH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
)
# Its plaintext as the documentation prints it, one element a line without the indentation.
MESSAGE = (
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
    "<FromUserName><![CDATA[mycreate]]></FromUserName>\n"
    "<CreateTime>1409659813</CreateTime>\n"
    "<MsgType><![CDATA[text]]></MsgType>\n"
    "<Content><![CDATA[hello]]></Content>\n"
    "<MsgId>4561255354251345929</MsgId>\n"
    "<AgentID>218</AgentID>\n"
    "</xml>"
)
# The URL verification request of callback/Sample.py (使用示例一), its echostr URL-decoded.
ECHOSTR = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
ECHO_PLAINTEXT = "1616140317555161061"

DECRYPT = "wecom_decrypt(ciphertext, key, receive_id)"
PARSE = "parse_xml(text)"


def search(source: str, data: Any = None, scope: Any = None) -> Any:
    return Expression(source).search(data if data is not None else {}, scope)


def decrypt(ciphertext: Any, key: str = AES_KEY, receive_id: str = CORP_ID) -> Optional[str]:
    return search(DECRYPT, {"ciphertext": ciphertext, "key": key, "receive_id": receive_id})


def parse(text: Any) -> Any:
    return search(PARSE, {"text": text})


def encrypt(plain: bytes, key: str = AES_KEY) -> str:
    """``plain`` (already framed and padded) encrypted as WeCom does: AES-256-CBC, the key
    base64-decoded from the EncodingAESKey and "=", the IV its first 16 bytes."""
    secret = base64.b64decode(key + "=")
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(secret[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


def framed(message: bytes, receive_id: bytes = CORP_ID.encode(), length: Optional[int] = None):  # noqa: ANN201
    """16 random bytes, the 4-byte big-endian length, the message and the receive id."""
    size = len(message) if length is None else length
    return b"0123456789abcdef" + size.to_bytes(4, "big") + message + receive_id


def padded(data: bytes, block: int = 32) -> bytes:
    count = block - len(data) % block
    return data + bytes([count]) * count


# wecom_decrypt(ciphertext, encoding_aes_key, receive_id)


def test_the_documented_message_decrypts_to_its_documented_plaintext() -> None:
    assert decrypt(MSG_ENCRYPT) == MESSAGE
    # The file holds the same bytes (tests/payloads/wecom/SOURCES.md).
    assert (PAYLOADS / "callback_decrypted.xml").read_text("utf-8") == MESSAGE


def test_the_documented_echostr_decrypts_to_the_text_to_answer() -> None:
    assert decrypt(ECHOSTR) == ECHO_PLAINTEXT


def test_the_vectors_file_gives_the_same_values() -> None:
    vectors = json.loads((PAYLOADS / "crypto_vectors.json").read_text())
    assert (vectors["corpId"], vectors["encodingAesKey"]) == (CORP_ID, AES_KEY)
    assert vectors["message"]["msg_encrypt"] == MSG_ENCRYPT
    assert vectors["url_verification"]["echostr"] == ECHOSTR
    assert vectors["url_verification"]["expected_response_body"] == ECHO_PLAINTEXT


def test_the_key_and_corp_id_come_from_the_environment() -> None:
    source = "wecom_decrypt(xml.Encrypt, env('WECOM_AES_KEY'), env('WECOM_CORP_ID'))"
    scope = Scope(environ={"WECOM_AES_KEY": AES_KEY, "WECOM_CORP_ID": CORP_ID})
    assert search(source, {"xml": {"Encrypt": MSG_ENCRYPT}}, scope) == MESSAGE
    assert Expression(source).env_names == {"WECOM_AES_KEY", "WECOM_CORP_ID"}


def test_the_image_message_encrypted_for_the_tests_decrypts_with_a_whole_padding_block() -> None:
    # tests/payloads/wecom/image_message_encrypted.xml: 352 framed bytes, 32 bytes of padding.
    body = xmlbody.read_xml((PAYLOADS / "image_message_encrypted.xml").read_bytes())
    expected = (PAYLOADS / "image_message_decrypted.xml").read_text("utf-8")
    assert decrypt(body["xml"]["Encrypt"]) == expected
    assert "<MsgType><![CDATA[image]]></MsgType>" in expected


def test_a_message_for_another_corp_gives_null() -> None:
    assert decrypt(MSG_ENCRYPT, receive_id="ww1436e0e65a779aee") is None
    assert decrypt(ECHOSTR, receive_id="ww1436e0e65a779aee") is None


@pytest.mark.parametrize(
    "receive_id",
    [CORP_ID[:-1], CORP_ID + "7", CORP_ID.upper(), "", " " + CORP_ID, "wx5823bf96d3bd56c7\x00"],
)
def test_only_the_exact_receive_id_is_accepted(receive_id: str) -> None:
    assert decrypt(MSG_ENCRYPT, receive_id=receive_id) is None


def test_an_empty_receive_id_is_one_too() -> None:
    # WeCom's own smart bots encrypt with receiveid "": nothing after the message.
    assert decrypt(encrypt(padded(framed(b"hello", b""))), receive_id="") == "hello"
    assert decrypt(encrypt(padded(framed(b"hello", b""))), receive_id=CORP_ID) is None


def test_a_message_encrypted_here_decrypts_whatever_its_length() -> None:
    for size in (0, 1, 11, 12, 13, 43, 44, 45, 100):  # 20 + 18 + 12 = 50: around the blocks
        message = ("é" * size).encode("utf-8")
        assert decrypt(encrypt(padded(framed(message)))) == "é" * size


def test_another_key_gives_null() -> None:
    other = base64.b64encode(bytes(range(32))).decode("ascii").rstrip("=")
    assert len(other) == 43
    assert decrypt(MSG_ENCRYPT, key=other) is None
    assert decrypt(ECHOSTR, key=other) is None


@pytest.mark.parametrize(
    "ciphertext",
    [
        None,
        "",
        "not base64!",
        MSG_ENCRYPT.rstrip("="),  # not padded base64
        MSG_ENCRYPT + "A",
        " " + MSG_ENCRYPT,
        "中文" * 22,
        base64.b64encode(base64.b64decode(MSG_ENCRYPT)[:-16]).decode(),  # not whole 32-byte blocks
        base64.b64encode(base64.b64decode(MSG_ENCRYPT)[:-32]).decode(),  # the padding block cut
        base64.b64encode(base64.b64decode(MSG_ENCRYPT)[32:]).decode(),  # the first blocks cut
        base64.b64encode(bytes(32)).decode(),
        base64.b64encode(bytes(16)).decode(),
    ],
)
def test_what_is_no_wecom_ciphertext_gives_null(ciphertext: Any) -> None:
    assert decrypt(ciphertext) is None


@pytest.mark.parametrize(
    "plain",
    [
        # framed(b"hello") is 43 bytes: 21 bytes to 64.
        framed(b"hello") + b"\x00" * 21,  # padding 0
        framed(b"hello") + bytes([33]) * 21,  # padding beyond a 32-byte block
        framed(b"hello") + b"\x01" * 20 + b"\x15",  # padding 21 whose bytes differ
        framed(b"hello") + b"\x15" * 20 + b"\x14",  # padding 20 over bytes of 21
        padded(framed(b"hello"), 16),  # PKCS#7 for 16-byte blocks, and 16 bytes short
        padded(b"0123456789abcdef\x00\x00"),  # shorter than the random bytes and the length
        padded(framed(b"hello", length=6)),  # a length past the message: receive id cut
        padded(framed(b"hello", length=4)),  # a length short of it: "o" before the receive id
        padded(framed(b"hello", length=0x7FFFFFFF)),  # a length past the end
        padded(framed(b"\xff\xfe hello")),  # a message that is not UTF-8
        padded(framed(b"hello", b"")),  # no receive id
    ],
)
def test_a_frame_or_padding_that_is_not_wecom_s_gives_null(plain: bytes) -> None:
    assert len(plain) % 16 == 0
    assert decrypt(encrypt(plain)) is None


def test_a_ciphertext_longer_than_a_body_gives_null_at_once() -> None:
    too_long = "A" * (defaults.MAX_BODY + 4)  # base64 of zero bytes, whole blocks
    started = time.perf_counter()
    assert decrypt(too_long) is None
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "key",
    [
        AES_KEY[:-1],  # 42 characters: 31 bytes
        AES_KEY + "AAAA",
        AES_KEY[:-1] + "!",  # not base64
        "secret key material!",
        "",
        "密钥" * 22,
    ],
)
def test_a_key_that_is_not_32_bytes_fails_without_quoting_it(key: str) -> None:
    with pytest.raises(EvaluationError) as raised:
        decrypt(MSG_ENCRYPT, key=key)
    message = str(raised.value)
    assert "wecom_decrypt(): the key is not 32 bytes in base64" in message
    if key:
        assert key not in message
        assert key[:8] not in message


def test_the_key_is_checked_whatever_the_ciphertext() -> None:
    with pytest.raises(EvaluationError, match="the key is not 32 bytes"):
        decrypt(None, key="short")


def test_the_key_may_keep_its_base64_padding() -> None:
    assert decrypt(MSG_ENCRYPT, key=AES_KEY + "=") == MESSAGE


@pytest.mark.parametrize(
    "source, message",
    [
        ("wecom_decrypt(c, k)", r"wecom_decrypt\(\) takes 3 arguments, got 2"),
        ("wecom_decrypt(c, `null`, r)", "argument 2 must be string, got null"),
        ("wecom_decrypt(c, k, `1`)", "argument 3 must be string, got number"),
        ("wecom_decrypt(`1`, k, r)", "argument 1 must be string or null, got number"),
    ],
)
def test_wecom_decrypt_checks_its_arguments_when_compiled(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        Expression(source)


def test_a_receive_id_from_the_data_that_is_no_string_fails() -> None:
    with pytest.raises(EvaluationError, match="wecom_decrypt"):
        search("wecom_decrypt(c, k, r)", {"c": MSG_ENCRYPT, "k": AES_KEY, "r": 1})


# parse_xml(text)


def test_the_documented_plaintext_reads_as_an_xml_request_body_does() -> None:
    assert parse(MESSAGE) == {
        "xml": {
            "ToUserName": "wx5823bf96d3bd56c7",
            "FromUserName": "mycreate",
            "CreateTime": "1409659813",
            "MsgType": "text",
            "Content": "hello",
            "MsgId": "4561255354251345929",
            "AgentID": "218",
        }
    }
    assert parse(MESSAGE) == xmlbody.read_xml(MESSAGE.encode("utf-8"))


def test_decrypt_then_parse() -> None:
    source = "parse_xml(wecom_decrypt(Encrypt, key, corp)).xml.[FromUserName, Content, MsgId]"
    data = {"Encrypt": MSG_ENCRYPT, "key": AES_KEY, "corp": CORP_ID}
    assert search(source, data) == ["mycreate", "hello", "4561255354251345929"]
    # Another corp's: null all the way, no failure.
    assert search(source, {**data, "corp": "ww1436e0e65a779aee"}) is None


def test_attributes_text_repeated_names_and_cdata_follow_the_request_format() -> None:
    text = '<r><m id="7">hi</m><m>there</m><e/><c><![CDATA[<b>&amp;</b>]]></c> <t a="1"/></r>'
    assert parse(text) == {
        "r": {
            "m": [{"@id": "7", "#text": "hi"}, "there"],
            "e": "",
            "c": "<b>&amp;</b>",
            "t": {"@a": "1"},
        }
    }
    assert parse(text) == xmlbody.read_xml(text.encode("utf-8"))


def test_the_text_is_read_as_the_unicode_it_is_whatever_its_declaration_says() -> None:
    for encoding in ("ISO-8859-1", "GBK", "UTF-16"):
        text = f'<?xml version="1.0" encoding="{encoding}"?><a>é中文</a>'
        assert parse(text) == {"a": "é中文"}


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "hello",
        "1616140317555161061",
        "<a>",
        "<a></b>",
        "<a/><b/>",  # two roots
        "<a>&nbsp;</a>",  # an undeclared entity
        "<a>\x00</a>",
        '{"xml": {}}',
        "<a>\ud800</a>",  # a lone surrogate: no UTF-8
    ],
)
def test_what_is_no_well_formed_xml_gives_null(text: Any) -> None:
    assert parse(text) is None


@pytest.mark.parametrize(
    "text",
    [
        # "Billion laughs": ten levels of ten references each.
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
            for i in range(1, 10)
        )
        + "]><lolz>&lol9;</lolz>",
        # An external entity: a file of the server.
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY f SYSTEM "file:///etc/passwd">]><x>&f;</x>',
        # An external DTD, and a parameter entity.
        '<!DOCTYPE x SYSTEM "http://127.0.0.1:1/evil.dtd"><x/>',
        '<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:1/p">%p;]><x/>',
        "<!DOCTYPE x><x/>",
    ],
)
def test_a_document_type_declaration_gives_null_at_once(text: str) -> None:
    started = time.perf_counter()
    assert parse(text) is None
    assert time.perf_counter() - started < 0.5


def test_nesting_up_to_the_request_format_s_depth_reads_and_deeper_gives_null() -> None:
    depth = xmlbody.MAX_DEPTH
    assert depth == 100
    inner: Any = "x"
    for _ in range(depth - 1):
        inner = {"a": inner}
    assert parse("<a>" * depth + "x" + "</a>" * depth) == {"a": inner}
    assert parse("<a>" * (depth + 1) + "x" + "</a>" * (depth + 1)) is None
    assert parse("<a>" * 100_000 + "</a>" * 100_000) is None


def test_more_elements_than_the_request_format_reads_give_null() -> None:
    limit = xmlbody.MAX_ELEMENTS
    assert limit == 10_000
    assert parse("<r>" + "<i/>" * (limit - 1) + "</r>") == {"r": {"i": [""] * (limit - 1)}}
    assert parse("<r>" + "<i/>" * limit + "</r>") is None


def test_a_text_longer_than_a_body_gives_null_at_once() -> None:
    text = "<a>" + "x" * defaults.MAX_BODY + "</a>"
    started = time.perf_counter()
    assert parse(text) is None
    assert time.perf_counter() - started < 0.5
    fits = "<a>" + "x" * (defaults.MAX_BODY - 7) + "</a>"
    assert parse(fits) == {"a": "x" * (defaults.MAX_BODY - 7)}


def test_parse_xml_wants_a_string_or_null() -> None:
    with pytest.raises(ExpressionError, match=r"parse_xml\(\) argument 1 must be string or null"):
        Expression("parse_xml(`1`)")
    with pytest.raises(EvaluationError, match="parse_xml"):
        search("parse_xml(n)", {"n": 1})


# Compiled and interpreted: functions that read no scope give the same in both.


@pytest.mark.parametrize(
    "source",
    [
        "wecom_decrypt(encrypt, key, corp)",
        "wecom_decrypt(echostr, key, corp)",
        "wecom_decrypt(encrypt, key, 'ww1436e0e65a779aee')",
        "parse_xml(wecom_decrypt(encrypt, key, corp)).xml.Content",
        "map(&parse_xml(@), [message, 'no xml', `null`])",
        f"map(&wecom_decrypt(@, '{AES_KEY}', '{CORP_ID}'), [encrypt, echostr, 'AAAA'])",
    ],
)
def test_compiled_and_interpreted_agree(source: str) -> None:
    data = {
        "encrypt": MSG_ENCRYPT,
        "echostr": ECHOSTR,
        "key": AES_KEY,
        "corp": CORP_ID,
        "message": MESSAGE,
    }
    interpreted = jmespath.search(source, data, options=Options(custom_functions=FUNCTIONS))
    assert search(source, data) == interpreted
