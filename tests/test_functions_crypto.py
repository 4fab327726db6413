"""hmac(), sha1(), sha512(), aes_cbc_decrypt(), random_hex(), uuid4(), now(), raw_body(),
method() and path(), through the expressions that call them.

Expected values are written out from the documents that publish them:

- HMAC-SHA-1: RFC 2202 section 3 (test cases 1, 2 and 5);
- HMAC-SHA-256 and HMAC-SHA-512: RFC 4231 section 4 (test cases 1, 2 and 5, whose MAC the RFC
  gives truncated to 128 bits);
- SHA-1 and SHA-512: the examples of FIPS 180 (NIST's "abc" and two-block messages), and the
  well-known digests of the empty string;
- AES-256-CBC: NIST SP 800-38A, appendix F.2.5 (CBC-AES256.Decrypt), and the example of
  Lark/Feishu's event encryption documentation (encrypt key "test key", "hello world");
- UUIDs: RFC 4122 section 4.4 (version 4: the version nibble 4, the variant bits 10);
- times: 1234567890 is 2009-02-13T23:31:30Z, 1000000000 is 2001-09-09T01:46:40Z.

The non-keyed vectors whose keys are not UTF-8 text (0xaa bytes) cannot be written as
strings, and are left out.
"""

import base64
import hmac as std_hmac
import re
import time
from typing import Any, Callable, List

import jmespath
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from jmespath import exceptions
from jmespath.visitor import Options

from generic_connector import defaults
from generic_connector.compiler import compile_mapping
from generic_connector.expressions import EvaluationError, Expression, ExpressionError
from generic_connector.functions import (
    FUNCTIONS,
    REQUEST_FUNCTIONS,
    SCOPE_FUNCTIONS,
    Scope,
)
from generic_connector.request import IncomingRequest


def search(source: str, data: Any = None, scope: Any = None) -> Any:
    return Expression(source).search(data if data is not None else {}, scope)


def interpreted(source: str, data: Any) -> Any:
    """jmespath's own interpreter with the connector's functions (no scope)."""
    return jmespath.search(source, data, options=Options(custom_functions=FUNCTIONS))


# hmac(algorithm, key, data, encoding)

# RFC 2202 section 3, HMAC-SHA-1.
RFC_2202 = [
    ("\x0b" * 20, "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    ("Jefe", "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    ("\x0c" * 20, "Test With Truncation", "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"),
]
# RFC 4231 section 4.2 (test case 1) and 4.3 (test case 2).
RFC_4231 = [
    (
        "sha256",
        "\x0b" * 20,
        "Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        "sha512",
        "\x0b" * 20,
        "Hi There",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
    ),
    (
        "sha256",
        "Jefe",
        "what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        "sha512",
        "Jefe",
        "what do ya want for nothing?",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    ),
]
# RFC 4231 section 4.6 (test case 5): the MAC truncated to its first 128 bits.
RFC_4231_TRUNCATED = [
    ("sha256", "a3b6167473100ee06e0c796c2955552b"),
    ("sha512", "415fad6271580a531d4179bc891d87a6"),
]

HMAC = "hmac('{algorithm}', key, data, '{encoding}')"


@pytest.mark.parametrize("key, data, mac", RFC_2202)
def test_hmac_sha1_gives_the_rfc_2202_vectors(key: str, data: str, mac: str) -> None:
    source = HMAC.format(algorithm="sha1", encoding="hex")
    assert search(source, {"key": key, "data": data}) == mac


@pytest.mark.parametrize("algorithm, key, data, mac", RFC_4231)
def test_hmac_sha2_gives_the_rfc_4231_vectors(
    algorithm: str, key: str, data: str, mac: str
) -> None:
    source = HMAC.format(algorithm=algorithm, encoding="hex")
    assert search(source, {"key": key, "data": data}) == mac


@pytest.mark.parametrize("algorithm, prefix", RFC_4231_TRUNCATED)
def test_hmac_starts_with_the_rfc_4231_truncated_mac(algorithm: str, prefix: str) -> None:
    source = HMAC.format(algorithm=algorithm, encoding="hex")
    mac = search(source, {"key": "\x0c" * 20, "data": "Test With Truncation"})
    assert mac.startswith(prefix)
    assert len(mac) == {"sha256": 64, "sha512": 128}[algorithm]


@pytest.mark.parametrize(
    "algorithm, key, data, mac",
    [("sha1", *case) for case in RFC_2202] + RFC_4231,
)
def test_hmac_in_base64_is_the_same_mac(algorithm: str, key: str, data: str, mac: str) -> None:
    source = HMAC.format(algorithm=algorithm, encoding="base64")
    encoded = search(source, {"key": key, "data": data})
    assert base64.b64decode(encoded, validate=True) == bytes.fromhex(mac)


def test_hmac_of_the_raw_body_with_a_key_from_the_environment() -> None:
    # RFC 4231 test case 2, as a platform's signature over the body it sent.
    request = IncomingRequest.from_parts(b"what do ya want for nothing?", {"X-Signature": "x"})
    scope = Scope(request, None, {"SIGNING_SECRET": "Jefe"})
    source = "hmac('sha256', env('SIGNING_SECRET'), raw_body(), 'hex')"
    assert search(source, scope=scope) == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert Expression(source).env_names == {"SIGNING_SECRET"}  # checked at start-up


def test_hmac_keys_and_hashes_utf_8() -> None:
    # "é" is C3 A9 in UTF-8, E9 in Latin-1.
    expected = std_hmac.new(b"\xc3\xa9", b"\xc3\xa9", "sha256").hexdigest()
    assert search("hmac('sha256', 'é', 'é', 'hex')") == expected
    assert expected != std_hmac.new(b"\xe9", b"\xe9", "sha256").hexdigest()


@pytest.mark.parametrize(
    "source, message",
    [
        ("hmac(algorithm, 'k', 'd', 'hex')", r"hmac\(\) argument 1 is a literal, one of sha1"),
        ("hmac('md5', 'k', 'd', 'hex')", "one of sha1, sha256, sha512"),
        ("hmac('SHA256', 'k', 'd', 'hex')", "one of sha1, sha256, sha512"),
        ("hmac('sha256', 'k', 'd', encoding)", r"argument 4 is a literal, one of hex, base64"),
        ("hmac('sha256', 'k', 'd', 'base32')", "one of hex, base64"),
        ("hmac('sha256', 'k', 'd')", r"hmac\(\) takes 4 arguments, got 3"),
        ("hmac('sha256', `1`, 'd', 'hex')", r"hmac\(\) argument 2 must be string, got number"),
    ],
)
def test_hmac_takes_its_algorithm_and_encoding_as_literals(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        Expression(source)


def test_hmac_refuses_what_is_not_a_string_when_it_runs() -> None:
    with pytest.raises(EvaluationError, match="hmac"):
        search(HMAC.format(algorithm="sha256", encoding="hex"), {"key": "k", "data": 1})
    with pytest.raises(EvaluationError, match="hmac"):
        search(HMAC.format(algorithm="sha256", encoding="hex"), {"data": "d"})  # key null


def test_hmac_called_directly_checks_its_algorithm_and_encoding() -> None:
    # What the compile-time check guarantees, the function checks again for other callers.
    with pytest.raises(exceptions.JMESPathError, match="algorithm is one of sha1, sha256"):
        FUNCTIONS.call_function("hmac", ["md5", "k", "d", "hex"])
    with pytest.raises(exceptions.JMESPathError, match="encoding is one of hex, base64"):
        FUNCTIONS.call_function("hmac", ["sha1", "k", "d", "base32"])


@pytest.mark.parametrize(
    "source",
    [
        "hmac('sha256', env(name), raw_body(), 'hex')",
        "hmac('sha256', env(header('x-key-name')), raw_body(), 'hex')",
        "hmac('sha256', env(join('', ['SEC', 'RET'])), raw_body(), 'hex')",
        "aes_cbc_decrypt(encrypt, env(name), `null`, 'sha256')",
        "sha256(env(path('tenant')))",
    ],
)
def test_a_secret_is_still_read_only_by_a_literal_name(source: str) -> None:
    with pytest.raises(ExpressionError, match=r"env\(\) takes the variable's name as a literal"):
        Expression(source)


# sha1(), sha512(): FIPS 180's examples.


@pytest.mark.parametrize(
    "text, digest",
    [
        ("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ("abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
        ),
    ],
)
def test_sha1_gives_the_fips_180_digests(text: str, digest: str) -> None:
    assert search("sha1(text)", {"text": text}) == digest


@pytest.mark.parametrize(
    "text, digest",
    [
        (
            "",
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
            "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        ),
        (
            "abc",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
        (
            "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
            "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
            "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909",
        ),
    ],
)
def test_sha512_gives_the_fips_180_digests(text: str, digest: str) -> None:
    assert search("sha512(text)", {"text": text}) == digest


def test_sha1_and_sha512_want_strings() -> None:
    with pytest.raises(ExpressionError, match=r"sha1\(\) argument 1 must be string"):
        Expression("sha1(`1`)")
    with pytest.raises(EvaluationError, match="sha512"):
        search("sha512(n)", {"n": 1})


# aes_cbc_decrypt(ciphertext, key, iv, key_encoding)

# NIST SP 800-38A, F.2.5 CBC-AES256.Decrypt.
NIST_KEY = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
NIST_IV = "000102030405060708090a0b0c0d0e0f"
NIST_CIPHERTEXT = [
    "f58c4c04d6e5f1ba779eabfb5f7bfbd6",
    "9cfc4e967edb808d679f777bc6702c7d",
    "39f23369a9d9bacfa530e26304231461",
    "b2eb05e2c39be9fcda6c19078c6a9d1b",
]
NIST_PLAINTEXT = [
    "6bc1bee22e409f96e93d7e117393172a",
    "ae2d8a571e03ac9c9eb76fac45af8e51",
    "30c81c46a35ce411e5fbc1191a0a52ef",
    "f69f2445df4f9b17ad2b417be66c3710",
]
# Lark/Feishu's documented example: encrypt key "test key", IV in the first 16 bytes.
LARK_KEY = "test key"
LARK_ENCRYPT = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="

AES = "aes_cbc_decrypt(ciphertext, key, iv, '{encoding}')"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def xor(*blocks: bytes) -> bytes:
    result = bytes(16)
    for block in blocks:
        result = bytes(a ^ b for a, b in zip(result, block))
    return result


# CBC decrypts the first block as AES-1(C1) XOR IV, and the vector gives AES-1(C1) XOR IV = P1:
# with IV' = IV XOR P1 XOR T, the first block decrypts to T. T is 15 characters of text and
# one byte of PKCS#7 padding, so the function's whole path (base64, key, IV, unpadding, UTF-8)
# meets the published key and block.
TEXT = "NIST SP 800-38A"
NIST_TEXT_IV = xor(
    bytes.fromhex(NIST_IV), bytes.fromhex(NIST_PLAINTEXT[0]), TEXT.encode("ascii") + b"\x01"
)


def test_aes_cbc_decrypt_decrypts_the_nist_block_with_the_nist_key() -> None:
    data = {"ciphertext": b64(bytes.fromhex(NIST_CIPHERTEXT[0])), "key": NIST_KEY}
    assert search(AES.format(encoding="hex"), {**data, "iv": b64(NIST_TEXT_IV)}) == TEXT


def test_aes_cbc_decrypt_takes_the_iv_from_the_ciphertext_when_it_is_null() -> None:
    ciphertext = b64(NIST_TEXT_IV + bytes.fromhex(NIST_CIPHERTEXT[0]))
    data = {"ciphertext": ciphertext, "key": NIST_KEY, "iv": None}
    assert search(AES.format(encoding="hex"), data) == TEXT


def test_aes_cbc_decrypt_takes_a_base64_key_padded_or_not() -> None:
    key = b64(bytes.fromhex(NIST_KEY))
    data = {"ciphertext": b64(bytes.fromhex(NIST_CIPHERTEXT[0])), "iv": b64(NIST_TEXT_IV)}
    assert key.endswith("=")
    assert search(AES.format(encoding="base64"), {**data, "key": key}) == TEXT
    # WeCom's EncodingAESKey: the 43 characters without the "=".
    assert search(AES.format(encoding="base64"), {**data, "key": key.rstrip("=")}) == TEXT


def test_aes_cbc_decrypt_gives_the_lark_example() -> None:
    data = {"ciphertext": LARK_ENCRYPT, "key": LARK_KEY, "iv": None}
    assert search(AES.format(encoding="sha256"), data) == "hello world"


def test_aes_cbc_decrypt_of_a_lark_event_with_the_key_in_the_environment() -> None:
    scope = Scope(environ={"LARK_ENCRYPT_KEY": LARK_KEY})
    source = "aes_cbc_decrypt(encrypt, env('LARK_ENCRYPT_KEY'), `null`, 'sha256')"
    assert search(source, {"encrypt": LARK_ENCRYPT}, scope) == "hello world"
    assert Expression(source).env_names == {"LARK_ENCRYPT_KEY"}


def test_aes_cbc_decrypt_decrypts_several_blocks() -> None:
    # Encrypted here by the cryptography package itself: text of four blocks and more.
    text = '{"event": {"text": "héllo wörld, ' + "€" * 20 + '"}}'
    key, iv = bytes.fromhex(NIST_KEY), bytes.fromhex(NIST_IV)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(text.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    assert len(ciphertext) >= 64
    data = {"ciphertext": b64(iv + ciphertext), "key": NIST_KEY, "iv": None}
    assert search(AES.format(encoding="hex"), data) == text
    assert search(f"parse_json({AES.format(encoding='hex')}).event.text", data).startswith("héllo")


@pytest.mark.parametrize(
    "ciphertext, iv",
    [
        # The four NIST blocks: the plaintext ends in 0x10 without being a padding block,
        # and is no UTF-8 text either.
        (b64(bytes.fromhex("".join(NIST_CIPHERTEXT))), b64(bytes.fromhex(NIST_IV))),
        # The first NIST block: the NIST plaintext ends in 0x2a, no padding.
        (b64(bytes.fromhex(NIST_CIPHERTEXT[0])), b64(bytes.fromhex(NIST_IV))),
        ("not base64!", b64(NIST_TEXT_IV)),
        (b64(bytes.fromhex(NIST_CIPHERTEXT[0])), "not base64!"),
        (b64(bytes.fromhex(NIST_CIPHERTEXT[0])), b64(NIST_TEXT_IV[:15])),  # IV too short
        (b64(bytes.fromhex(NIST_CIPHERTEXT[0])[:15]), b64(NIST_TEXT_IV)),  # not whole blocks
        ("", b64(NIST_TEXT_IV)),  # nothing to decrypt
        (b64(NIST_TEXT_IV), None),  # an IV and nothing after it
        (b64(b"short"), None),
        (None, b64(NIST_TEXT_IV)),
    ],
)
def test_aes_cbc_decrypt_gives_null_for_what_it_cannot_decrypt(ciphertext: Any, iv: Any) -> None:
    data = {"ciphertext": ciphertext, "key": NIST_KEY, "iv": iv}
    assert search(AES.format(encoding="hex"), data) is None


def test_aes_cbc_decrypt_gives_null_for_plaintext_that_is_not_utf_8() -> None:
    # The first block decrypted to 15 bytes FF and a padding byte.
    iv = xor(bytes.fromhex(NIST_IV), bytes.fromhex(NIST_PLAINTEXT[0]), b"\xff" * 15 + b"\x01")
    data = {"ciphertext": b64(bytes.fromhex(NIST_CIPHERTEXT[0])), "key": NIST_KEY, "iv": b64(iv)}
    assert search(AES.format(encoding="hex"), data) is None


def test_aes_cbc_decrypt_with_another_key_gives_null() -> None:
    data = {"ciphertext": LARK_ENCRYPT, "key": "other key", "iv": None}
    assert search(AES.format(encoding="sha256"), data) is None


def test_aes_cbc_decrypt_gives_null_for_a_ciphertext_longer_than_a_body() -> None:
    too_long = "A" * (defaults.MAX_BODY + 4)  # base64 of zero bytes, whole blocks
    data = {"ciphertext": too_long, "key": NIST_KEY, "iv": None}
    assert search(AES.format(encoding="hex"), data) is None


@pytest.mark.parametrize(
    "key, encoding",
    [
        (NIST_KEY[:32], "hex"),  # AES-128's length
        (NIST_KEY[:-1] + "g", "hex"),  # not hex
        (NIST_KEY + "00", "hex"),
        (b64(bytes.fromhex(NIST_KEY))[:-8], "base64"),
        ("secret key material!", "base64"),
    ],
)
def test_a_key_that_is_not_32_bytes_fails_without_quoting_it(key: str, encoding: str) -> None:
    data = {"ciphertext": LARK_ENCRYPT, "key": key, "iv": None}
    with pytest.raises(EvaluationError) as raised:
        search(AES.format(encoding=encoding), data)
    message = str(raised.value)
    assert f"the key is not 32 bytes in {encoding}" in message
    assert key not in message
    assert key[:8] not in message


@pytest.mark.parametrize(
    "source, message",
    [
        ("aes_cbc_decrypt(c, 'k', `null`, encoding)", r"argument 4 is a literal, one of hex"),
        ("aes_cbc_decrypt(c, 'k', `null`, 'utf8')", "one of hex, base64, sha256"),
        ("aes_cbc_decrypt(c, 'k', `null`)", r"aes_cbc_decrypt\(\) takes 4 arguments, got 3"),
        ("aes_cbc_decrypt(c, `null`, `null`, 'hex')", "argument 2 must be string, got null"),
    ],
)
def test_aes_cbc_decrypt_takes_its_key_encoding_as_a_literal(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        Expression(source)


# Compiled and interpreted: the functions that read no scope give the same in both.


@pytest.mark.parametrize(
    "source",
    [
        "hmac('sha1', key, data, 'hex')",
        "hmac('sha512', key, data, 'base64')",
        "sha1(data)",
        "sha512(data)",
        "aes_cbc_decrypt(encrypt, lark, `null`, 'sha256')",
        "items[*].sha1(@)",
        "sort_by(items, &hmac('sha256', @, 'x', 'hex'))",
        "map(&aes_cbc_decrypt(@, 'test key', `null`, 'sha256'), [encrypt, 'AAAA'])",
        "sort_by(items, a || &sha512(@))",  # the expref left to the interpreter
    ],
)
def test_compiled_and_interpreted_agree(source: str) -> None:
    data = {
        "key": "Jefe",
        "data": "what do ya want for nothing?",
        "encrypt": LARK_ENCRYPT,
        "lark": LARK_KEY,
        "items": ["b", "a", "c"],
    }
    assert search(source, data) == interpreted(source, data)


# random_hex(n), uuid4(): the scope's source of randomness.


def counting() -> Callable[[int], bytes]:
    """Bytes 0, 1, 2... continuing from one call to the next, for calls told apart."""
    state = [0]

    def random(count: int) -> bytes:
        start = state[0]
        state[0] += count
        return bytes(byte % 256 for byte in range(start, start + count))

    return random


def test_random_hex_gives_the_scope_s_random_bytes() -> None:
    requested: List[int] = []

    def random(count: int) -> bytes:
        requested.append(count)
        return bytes(range(count))

    scope = Scope(random=random)
    assert search("random_hex(`4`)", scope=scope) == "00010203"
    assert search("random_hex(`1`)", scope=scope) == "00"
    assert search("random_hex(n)", {"n": 16}, scope) == "000102030405060708090a0b0c0d0e0f"
    assert search("random_hex(`64`)", scope=scope) == bytes(range(64)).hex()
    assert requested == [4, 1, 16, 64]


def test_uuid4_sets_the_version_and_variant_of_the_scope_s_bytes() -> None:
    # RFC 4122 4.4: the version's nibble is 4, the variant's two bits 10.
    assert search("uuid4()", scope=Scope(random=lambda n: bytes(range(n)))) == (
        "00010203-0405-4607-8809-0a0b0c0d0e0f"
    )
    assert search("uuid4()", scope=Scope(random=lambda n: b"\xff" * n)) == (
        "ffffffff-ffff-4fff-bfff-ffffffffffff"
    )
    assert search("uuid4()", scope=Scope(random=lambda n: bytes(n))) == (
        "00000000-0000-4000-8000-000000000000"
    )


UUID_4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_without_a_scope_the_randomness_is_the_system_s() -> None:
    first, second = search("[uuid4(), uuid4()]")
    assert UUID_4.match(first) and UUID_4.match(second) and first != second
    hexes = {search("random_hex(`16`)") for _ in range(3)}
    assert len(hexes) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", h) for h in hexes)


@pytest.mark.parametrize(
    "source",
    [
        "[uuid4(), uuid4()]",
        "{a: uuid4(), b: uuid4()}.[a, b]",
        "[random_hex(`2`), random_hex(`2`)]",
        "join(' ', [uuid4(), uuid4()]) | split(@, ' ')",
    ],
)
def test_each_call_gives_another_value(source: str) -> None:
    first, second = search(source, scope=Scope(random=counting()))
    assert first != second


def test_calls_in_comparisons_and_mappings_are_not_shared() -> None:
    # The compiler computes what is used twice once; not a call that gives a new value.
    assert search("uuid4() == uuid4()", scope=Scope(random=counting())) is False
    assert search("random_hex(`2`) != random_hex(`2`)", scope=Scope(random=counting())) is True
    trees = [jmespath.compile("uuid4()").parsed, jmespath.compile("uuid4()").parsed]
    fields = compile_mapping([], trees, FUNCTIONS)({}, Scope(random=counting()))
    assert fields == (
        "00010203-0405-4607-8809-0a0b0c0d0e0f",
        "10111213-1415-4617-9819-1a1b1c1d1e1f",
    )


def test_what_other_calls_share_is_still_computed_once() -> None:
    reads: List[float] = []

    def clock() -> float:
        reads.append(0)
        return 1234567890.0

    assert search("now('s') == now('s')", scope=Scope(clock=clock)) is True
    assert len(reads) == 1


@pytest.mark.parametrize("count", [0, -1, 65, 1.5, 1000])
def test_random_hex_gives_1_to_64_bytes(count: float) -> None:
    with pytest.raises(EvaluationError, match="whole number of bytes from 1 to 64"):
        search("random_hex(n)", {"n": count}, Scope(random=bytes))


def test_random_hex_wants_a_number_and_uuid4_nothing() -> None:
    with pytest.raises(ExpressionError, match=r"random_hex\(\) argument 1 must be number"):
        Expression("random_hex('16')")
    with pytest.raises(EvaluationError, match="random_hex"):
        search("random_hex(n)", {"n": "16"})
    with pytest.raises(ExpressionError, match=r"uuid4\(\) takes 0 arguments, got 1"):
        Expression("uuid4(`1`)")


# now(unit): the scope's clock.


@pytest.mark.parametrize(
    "seconds, unit, expected",
    [
        (1234567890.987, "s", 1234567890),  # seconds are not rounded up
        (1234567890.987, "ms", 1234567890987),
        (1234567890.987, "rfc3339", "2009-02-13T23:31:30Z"),
        (1000000000.0, "s", 1000000000),
        (1000000000.0, "ms", 1000000000000),
        (1000000000.0, "rfc3339", "2001-09-09T01:46:40Z"),
        (0.0, "rfc3339", "1970-01-01T00:00:00Z"),
    ],
)
def test_now_reads_the_scope_s_clock(seconds: float, unit: str, expected: Any) -> None:
    scope = Scope(clock=lambda: seconds)
    result = search(f"now('{unit}')", scope=scope)
    assert result == expected
    assert type(result) is type(expected)


def test_without_a_scope_now_is_the_system_s_time() -> None:
    before = time.time()
    seconds, milliseconds, text = search("[now('s'), now('ms'), now('rfc3339')]")
    after = time.time()
    assert int(before) <= seconds <= after
    assert int(before * 1000) <= milliseconds <= round(after * 1000)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)


@pytest.mark.parametrize(
    "source, message",
    [
        ("now(unit)", r"now\(\) argument 1 is a literal, one of s, ms, rfc3339: now\('s'\)"),
        ("now('seconds')", "one of s, ms, rfc3339"),
        ("now()", r"now\(\) takes 1 argument, got 0"),
    ],
)
def test_now_takes_its_unit_as_a_literal(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        Expression(source)


# raw_body(), method(), path(name): the scope's request.


def test_request_functions_read_the_scope_request() -> None:
    request = IncomingRequest.from_parts(
        '{"text": "héllo"}'.encode(), {}, {}, "post", "/webhook", path_params={"tenant": "acme"}
    )
    source = "[raw_body(), method(), path('tenant'), path('absent')]"
    assert search(source, scope=Scope(request)) == ['{"text": "héllo"}', "POST", "acme", None]
    assert search(source) == [None, None, None, None]  # no request


def test_raw_body_is_null_for_a_body_that_is_not_utf_8() -> None:
    request = IncomingRequest.from_parts(b"caf\xe9", {"Content-Type": "text/plain"})
    assert search("raw_body()", scope=Scope(request)) is None
    assert search("raw_body()", scope=Scope(IncomingRequest.from_parts(b""))) == ""


def test_path_parameters_come_from_the_framework_s_request_when_first_read() -> None:
    class Source:  # what Sanic's request gives: the route's parameters in match_info
        match_info = {"tenant": "acme", "id": 7}
        args: dict = {}
        url = "http://localhost/webhooks/acme/7"

    request = IncomingRequest(b"{}", {}, None, "GET", "/webhooks/acme/7", source=Source())
    assert search("[path('tenant'), path('id'), path('x')]", scope=Scope(request)) == [
        "acme",
        "7",  # text, as the URL has it
        None,
    ]
    assert IncomingRequest(b"{}").path_params == {}


def test_the_new_request_functions_make_an_expression_read_the_request() -> None:
    assert {"raw_body", "method", "path"} <= REQUEST_FUNCTIONS
    for source in ("raw_body()", "method() == 'GET'", "path('tenant')"):
        assert Expression(source).reads_request, source
    for source in ("now('s')", "uuid4()", "random_hex(`8`)", "hmac('sha1', 'k', 'd', 'hex')"):
        assert not Expression(source).reads_request, source


def test_the_new_scope_functions_are_given_the_scope() -> None:
    new = {"raw_body", "method", "path", "now", "random_hex", "uuid4"}
    assert new <= SCOPE_FUNCTIONS
    assert not {"hmac", "sha1", "sha512", "aes_cbc_decrypt"} & SCOPE_FUNCTIONS


@pytest.mark.parametrize(
    "source",
    [
        "sort_by(@, a || &uuid4())",
        "[&now('s')]",
        "{a: &raw_body()}",
        "sort_by(@, a || &path('x'))",
    ],
)
def test_the_interpreter_is_not_given_them(source: str) -> None:
    with pytest.raises(ExpressionError, match=r"cannot be called in an &expression"):
        Expression(source)


def test_they_reach_projections_filters_and_exprefs() -> None:
    request = IncomingRequest.from_parts(b"{}", method="GET", path_params={"tenant": "acme"})
    scope = Scope(request, clock=lambda: 1000000000.0, random=lambda n: bytes(range(n)))
    items = {"items": [{"name": "b"}, {"name": "a"}]}
    cases = {
        "items[*].[name, path('tenant')]": [["b", "acme"], ["a", "acme"]],
        "items[?method() == 'GET'].name": ["b", "a"],
        "map(&[name, now('s')], items)": [["b", 1000000000], ["a", 1000000000]],
        "sort_by(items, &join('', [random_hex(`1`), name]))[].name": ["a", "b"],
        "items[*].uuid4()": ["00010203-0405-4607-8809-0a0b0c0d0e0f"] * 2,
    }
    for source, expected in cases.items():
        assert search(source, items, scope) == expected, source
