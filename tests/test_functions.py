"""The connector's own JMESPath functions, through the expressions that call them.

Expected values are written out: base64 from RFC 4648's test vectors (section 10), SHA-256
from FIPS 180-2's examples and the well-known digests of "" and the quick brown fox, and the
HS256 token from RFC 7519's and jwt.io's example claims.
"""

import hashlib
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from generic_connector import functions
from generic_connector.expressions import EvaluationError, Expression, ExpressionError
from generic_connector.functions import SCOPE_FUNCTIONS, Scope
from generic_connector.request import IncomingRequest


def search(source: str, data: Any = None, scope: Any = None) -> Any:
    return Expression(source).search(data if data is not None else {}, scope)


# base64_encode() and base64_decode(): standard alphabet, padded (RFC 4648 section 4).

RFC_4648 = [
    ("", ""),
    ("f", "Zg=="),
    ("fo", "Zm8="),
    ("foo", "Zm9v"),
    ("foob", "Zm9vYg=="),
    ("fooba", "Zm9vYmE="),
    ("foobar", "Zm9vYmFy"),
]


@pytest.mark.parametrize("text, encoded", RFC_4648)
def test_base64_encode_gives_the_rfc_4648_vectors(text: str, encoded: str) -> None:
    assert search("base64_encode(text)", {"text": text}) == encoded


@pytest.mark.parametrize("text, encoded", RFC_4648)
def test_base64_decode_reverses_them(text: str, encoded: str) -> None:
    assert search("base64_decode(encoded)", {"encoded": encoded}) == text


def test_base64_works_on_utf_8_text() -> None:
    # "é" is C3 A9 in UTF-8; "€" is E2 82 AC.
    assert search("base64_encode('é')") == "w6k="
    assert search("base64_encode('€')") == "4oKs"
    assert search("base64_decode('w6k=')") == "é"
    assert search("base64_decode('4oKs')") == "€"


def test_base64_uses_the_standard_alphabet_not_the_url_safe_one() -> None:
    # "~~~" is 7E 7E 7E: 011111 100111 111001 111110, the last 62 ("+"); "???" ends in 63.
    assert search("base64_encode('~~~')") == "fn5+"
    assert search("base64_encode('???')") == "Pz8/"
    assert search("base64_decode('fn5+')") == "~~~"
    assert search("base64_decode('Pz8/')") == "???"
    assert search("base64_decode('fn5-')") is None  # the URL-safe alphabet's 62
    assert search("base64_decode('Pz8_')") is None  # and 63


@pytest.mark.parametrize(
    "encoded",
    [
        "Zg",  # padding missing
        "Zg=",  # padding short
        "Zm9v!",  # not in the alphabet
        "Zm 9v",  # spaces are not skipped
        "é===",  # not ASCII
        "/w==",  # the byte FF: base64, but not UTF-8
        "gA==",  # the byte 80: a continuation byte on its own
    ],
)
def test_base64_decode_gives_null_for_what_is_not_base64_utf_8(encoded: str) -> None:
    assert search("base64_decode(encoded)", {"encoded": encoded}) is None


def test_base64_decode_of_null_is_null() -> None:
    assert search("base64_decode(missing)") is None


def test_base64_encode_wants_a_string() -> None:
    with pytest.raises(ExpressionError, match=r"base64_encode\(\) argument 1 must be string"):
        Expression("base64_encode(`1`)")
    with pytest.raises(EvaluationError, match="base64_encode"):
        search("base64_encode(n)", {"n": 1})


# html_escape() and html_unescape().


def test_html_escape_escapes_markup_and_both_quotes() -> None:
    data = {"text": "<a href=\"x\">Tom & 'Jerry'</a>"}
    escaped = "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#x27;Jerry&#x27;&lt;/a&gt;"
    assert search("html_escape(text)", data) == escaped
    assert search("html_escape('plain text')") == "plain text"
    assert search("html_escape('&amp;')") == "&amp;amp;"  # escapes what is escaped already


def test_html_unescape_resolves_named_decimal_and_hex_references() -> None:
    assert search("html_unescape('&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;')") == "<b>Tom & Jerry</b>"
    assert search("html_unescape('&quot;&#39;&#x27;&eacute;&#233;&#xE9;&#x263A;')") == (
        "\"''ééé\u263a"
    )
    assert search("html_unescape('&amp;amp;')") == "&amp;"  # once
    assert search("html_unescape('no references; & alone')") == "no references; & alone"


# sha256(): hexadecimal digest of the UTF-8 bytes.


@pytest.mark.parametrize(
    "text, digest",
    [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (
            "The quick brown fox jumps over the lazy dog",
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592",
        ),
    ],
)
def test_sha256_gives_the_known_digests(text: str, digest: str) -> None:
    assert search("sha256(text)", {"text": text}) == digest


def test_sha256_hashes_utf_8() -> None:
    # "é" is the bytes C3 A9 in UTF-8, E9 in Latin-1.
    assert search("sha256('é')") == hashlib.sha256(b"\xc3\xa9").hexdigest()
    assert search("sha256('é')") != hashlib.sha256(b"\xe9").hexdigest()


# jwt_sign(claims, 'KEY_ENV', algorithm): the key comes from the environment.

# RFC 7519 and jwt.io's example: these claims, HS256 and the secret "your-256-bit-secret".
JWT_IO_CLAIMS = "{sub: '1234567890', name: 'John Doe', iat: `1516239022`}"
JWT_IO_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.filterwarnings("ignore:The HMAC key")  # the example's secret is short
def test_jwt_sign_gives_the_well_known_hs256_token() -> None:
    scope = Scope(environ={"JWT_KEY": "your-256-bit-secret"})
    assert search(f"jwt_sign({JWT_IO_CLAIMS}, 'JWT_KEY', 'HS256')", scope=scope) == JWT_IO_TOKEN


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_jwt_sign_signs_claims_from_the_event_with_hmac(algorithm: str) -> None:
    secret = "a secret of at least sixty-four bytes, long enough for HMAC-SHA-512"
    scope = Scope(environ={"JWT_KEY": secret})
    token = search(
        f"jwt_sign({{sub: user.id, aud: 'api'}}, 'JWT_KEY', '{algorithm}')",
        {"user": {"id": "U1"}},
        scope,
    )
    assert jwt.get_unverified_header(token) == {"alg": algorithm, "typ": "JWT"}
    claims = jwt.decode(token, secret, algorithms=[algorithm], audience="api")
    assert claims == {"sub": "U1", "aud": "api"}


def test_jwt_sign_signs_with_an_rsa_private_key_for_rs256() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    token = search(
        "jwt_sign({iss: 'bot', n: `1`}, 'RSA_KEY', 'RS256')", scope=Scope(environ={"RSA_KEY": pem})
    )
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert jwt.decode(token, key.public_key(), algorithms=["RS256"]) == {"iss": "bot", "n": 1}


def test_jwt_sign_reads_the_key_from_the_scope_not_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "the process environment's secret, thirty-two bytes or more"
    monkeypatch.setenv("GC_JWT_KEY", secret)
    expression = "jwt_sign({a: `1`}, 'GC_JWT_KEY', 'HS256')"
    token = search(expression)  # no scope given: the default one reads os.environ
    assert jwt.decode(token, secret, algorithms=["HS256"]) == {"a": 1}
    with pytest.raises(EvaluationError, match="GC_JWT_KEY is not set"):
        search(expression, scope=Scope(environ={}))


def test_jwt_sign_with_a_key_that_is_not_rsa_fails_without_quoting_it() -> None:
    scope = Scope(environ={"RSA_KEY": "not-a-pem-key-but-a-secret"})
    with pytest.raises(EvaluationError) as raised:
        search("jwt_sign({a: `1`}, 'RSA_KEY', 'RS256')", scope=scope)
    assert "RSA_KEY is not a valid RS256 key" in str(raised.value)
    assert "not-a-pem-key-but-a-secret" not in str(raised.value)


def test_jwt_sign_wants_an_object_of_claims() -> None:
    with pytest.raises(ExpressionError, match=r"jwt_sign\(\) argument 1 must be object"):
        Expression("jwt_sign('claims', 'KEY', 'HS256')")
    scope = Scope(environ={"KEY": "k" * 32})
    with pytest.raises(EvaluationError, match="jwt_sign"):
        search("jwt_sign(claims, 'KEY', 'HS256')", {"claims": "text"}, scope)


@pytest.mark.parametrize(
    "source, message",
    [
        ("jwt_sign(`{}`, key, 'HS256')", "the key's environment variable as a literal"),
        ("jwt_sign(`{}`, join('', ['K', 'EY']), 'HS256')", "the key's environment variable"),
        ("jwt_sign(`{}`, 'KEY', alg)", "the algorithm as a literal"),
        ("jwt_sign(`{}`, 'KEY', 'none')", "one of HS256, HS384, HS512, RS256"),
        ("jwt_sign(`{}`, 'KEY', 'ES256')", "one of HS256, HS384, HS512, RS256"),
        ("jwt_sign(`{}`, 'KEY', 'hs256')", "one of HS256"),
        ("jwt_sign(`{}`, 'KEY')", r"jwt_sign\(\) takes 3 arguments, got 2"),
    ],
)
def test_jwt_sign_takes_its_key_and_algorithm_as_literals(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        Expression(source)


# The environment: names are literals, collected when the expression is compiled.


def test_env_and_env_or_read_the_scope_environment() -> None:
    scope = Scope(environ={"SET": "value", "EMPTY": ""})
    assert search("env('SET')", scope=scope) == "value"
    assert search("env('UNSET')", scope=scope) is None
    assert search("env_or('SET', 'default')", scope=scope) == "value"
    assert search("env_or('UNSET', 'default')", scope=scope) == "default"
    assert search("env_or('EMPTY', 'default')", scope=scope) == "default"


@pytest.mark.parametrize(
    "source, message",
    [
        ("env(name)", r"env\(\) takes the variable's name as a literal: env\('NAME'\)"),
        ("env_or(name, 'x')", r"env_or\(\) takes the variable's name as a literal"),
        ("env_or(header('x-variable'), 'x')", r"env_or\('NAME', 'default'\)"),
        ("env_or(join('', ['A', 'B']), 'x')", "as a literal"),
    ],
)
def test_request_data_cannot_choose_the_variable(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        Expression(source)


def test_the_default_of_env_or_may_come_from_the_request() -> None:
    scope = Scope(environ={})
    assert search("env_or('UNSET', fallback)", {"fallback": "from event"}, scope) == "from event"


def test_environment_names_are_collected() -> None:
    expression = Expression(
        "[env('A'), env_or('B', 'b'), jwt_sign(`{}`, 'C', 'HS256'), {d: env('D')}, env('A')]"
    )
    assert expression.env_names == {"A", "C", "D"}  # needed: start-up checks them
    assert expression.optional_env_names == {"B"}  # they have a default
    assert Expression("a.b").env_names == set()


# The request: header(), query() and body() read the scope's.


def test_request_functions_read_the_scope_request() -> None:
    request = IncomingRequest.from_parts(b"{}", {"X-Tenant": "acme"}, {"retry": "2"})
    expression = (
        "[header('x-tenant'), header('X-TENANT'), header('absent'), query('retry'), body()]"
    )
    assert search(expression, scope=Scope(request, {"a": 1})) == [
        "acme",
        "acme",
        None,
        "2",
        {"a": 1},
    ]
    assert search(expression) == [None, None, None, None, None]


def test_scope_functions_are_known_and_nothing_is_bound_globally() -> None:
    assert {
        "header", "query", "body", "env", "env_or", "jwt_sign",
        "raw_body", "method", "path", "now", "random_hex", "uuid4",
    } == SCOPE_FUNCTIONS  # fmt: skip
    for name in ("bind", "unbind", "bound_to", "contextvars"):
        assert not hasattr(functions, name)


# parse_json(): only what a request's own body could hold; null otherwise.


@pytest.mark.parametrize(
    "text, value",
    [
        ('{"a": [1, -2.5, "x", null, true]}', {"a": [1, -2.5, "x", None, True]}),
        ("12345678901234567890", 12345678901234567890),  # 20 digits: the most a body may hold
        ("-12345678901234567890", -12345678901234567890),
        ('"\\ud83d\\ude00"', "\U0001f600"),  # an escaped surrogate pair is one character
        ("[" * 100 + "]" * 100, eval("[" * 100 + "]" * 100)),  # 100 levels: the most allowed
    ],
    ids=lambda value: str(value)[:30],
)
def test_parse_json_decodes_what_a_body_could_hold(text: str, value: Any) -> None:
    assert search("parse_json(s)", {"s": text}) == value


@pytest.mark.parametrize(
    "text",
    [
        "1" * 1_000_000,  # int() of a million digits: 4 s before the bound
        '{"id": 123456789012345678901}',  # 21 digits
        "-123456789012345678901",
        "[" * 101 + "]" * 101,  # nested deeper than 100
        "[" * 100_000 + "]" * 100_000,  # deeper than Python's recursion limit
        "NaN",
        "-Infinity",
        "1e999",  # beyond a float's range
        '"\\ud800"',  # a lone surrogate: cannot be written as UTF-8
        '{"k\\udc00": 1}',
        '"' + "x" * 1_048_575 + '"',  # 1,048,577 characters: longer than a body may be
    ],
    ids=lambda text: text if len(text) < 40 else f"{text[:10]}...({len(text)} characters)",
)
def test_parse_json_gives_null_for_what_no_body_could_hold(text: str) -> None:
    assert search("parse_json(s)", {"s": text}) is None


# regex_replace(): run by the `regex` module, which stops a pattern after REGEX_TIMEOUT.


def test_a_catastrophic_pattern_fails_the_evaluation_instead_of_running_for_seconds() -> None:
    # `re` takes 8 s over these 27 characters (twice as long per "a" more).
    with pytest.raises(EvaluationError) as raised:
        search("regex_replace(s, '^(a|a)*$', '')", {"s": "a" * 26 + "!"})
    assert str(raised.value) == (
        "`regex_replace(s, '^(a|a)*$', '')` failed on this request: regex_replace() pattern "
        "'^(a|a)*$' took more than 0.1 s on a string of 27 characters (it backtracks "
        "catastrophically: avoid nested repetition such as (a+)+)"
    )


def test_a_long_subject_is_bounded_by_the_timeout_not_cut() -> None:
    # A mapping's pattern over a megabyte of text still works, all of it ...
    text = "<@U1> " + "x" * 1_048_576 + " <@U2>"
    assert search("regex_replace(s, '<@[A-Z0-9]+>', '')", {"s": text}) == (
        " " + "x" * 1_048_576 + " "
    )
    # ... and a catastrophic one over a megabyte stops after the timeout.
    with pytest.raises(EvaluationError, match="on a string of 1048577 characters"):
        search("regex_replace(s, '^(a|a)*$', '')", {"s": "a" * 1_048_576 + "!"})


def test_regex_replace_keeps_re_semantics() -> None:
    cases = {
        "regex_replace('abxd', 'x*', '-')": "-a-b--d-",  # empty matches as re since 3.7
        "regex_replace('a1', '(\\w)(\\d)', '\\2\\1 \\g<1>')": "1a a",
        "regex_replace('  @**Bot** hi', '^\\s*@\\*\\*[^*]+\\*\\*', '')": " hi",
    }
    for source, expected in cases.items():
        assert search(source) == expected, source
