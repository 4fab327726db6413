"""The ``jwt`` scheme against a real local key server, with keys and tokens made here.

Time is the ``now`` each check is given: caches and rate limits are moved through by
passing a later ``now``, never by sleeping.
"""

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import socket
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import jsonschema
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from generic_connector.auth import (
    AuthConfigError,
    AuthFailed,
    AuthScheme,
    AuthUnavailable,
    auth_schema,
    build_auth,
)
from generic_connector.request import IncomingRequest

NOW = 1_700_000_000.0
ISSUER = "chat@system.gserviceaccount.com"
AUDIENCE = "1234567890"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
VONAGE_SECRET = "vonage-signature-secret-of-32-bytes!"


# --- A key server --------------------------------------------------------------------------

Route = Union[Tuple[int, bytes], str]


class KeyServer:
    """A real HTTP server on 127.0.0.1 answering each path as ``routes`` say; counts hits.

    A route is ``(status, body)``, or ``"hang"``: no answer until the test ends. A path in
    ``redirects`` answers 302 with that Location.
    """

    def __init__(self) -> None:
        self.routes: Dict[str, Route] = {}
        self.redirects: Dict[str, str] = {}
        self.hits: Counter = Counter()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                server.hits[self.path] += 1
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route = server.routes.get(self.path, (404, b"not found"))
                if route == "hang":
                    server.release.wait(10)
                    route = (200, b"{}")
                status, body = route
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        serve = functools.partial(self.httpd.serve_forever, poll_interval=0.05)  # quick shutdown
        self.thread = threading.Thread(target=serve, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve_json(self, path: str, document: Any) -> str:
        self.routes[path] = (200, json.dumps(document).encode())
        return self.url(path)


@pytest.fixture(scope="module")
def module_server() -> Iterator[KeyServer]:
    server = KeyServer()
    server.thread.start()
    yield server
    server.release.set()
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def server(module_server: KeyServer) -> Iterator[KeyServer]:
    module_server.routes.clear()
    module_server.hits.clear()
    yield module_server
    module_server.release.set()
    module_server.release = threading.Event()


def closed_port_url() -> str:
    """A URL nothing listens on: a key server that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks"


# --- Keys and tokens -----------------------------------------------------------------------


def jwk(key: Any, kid: str, alg: Optional[str]) -> Dict[str, Any]:
    public = key.public_key()
    algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    entry = algorithm.to_jwk(public, as_dict=True)
    entry.update(kid=kid, use="sig")
    if alg:
        entry["alg"] = alg
    return entry


def certificate(key: rsa.RSAPrivateKey) -> str:
    """A self-signed PEM certificate for ``key``, as Google's x509 endpoints serve them."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test key server")])
    start = datetime(2023, 1, 1, tzinfo=timezone.utc)
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return built.public_bytes(Encoding.PEM).decode()


def claims(**changes: Any) -> Dict[str, Any]:
    """Google Chat's claims, valid at NOW; a change to None drops the claim."""
    base = {"iss": ISSUER, "aud": AUDIENCE, "iat": NOW - 10, "exp": NOW + 3600}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def token(
    payload: Dict[str, Any], key: Any = RSA_KEY, alg: str = "RS256", kid: Any = "rsa-1"
) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: Dict[str, Any], payload: Dict[str, Any], secret: Optional[bytes]) -> str:
    """A token put together by hand: ``alg: none`` or an HMAC with any secret."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    signature = (
        b"" if secret is None else hmac.new(secret, signing_input.encode(), "sha256").digest()
    )
    return signing_input + "." + b64url(signature)


def check(
    scheme: AuthScheme, sent: Optional[str], body: bytes = b"{}", now: float = NOW, **headers: str
) -> None:
    if sent is not None:
        headers.setdefault("Authorization", f"Bearer {sent}")
    request = IncomingRequest.from_parts(body, headers)
    asyncio.run(scheme.check(request, None, now))


@pytest.fixture
def jwks(server: KeyServer) -> str:
    return server.serve_json(
        "/jwks", {"keys": [jwk(RSA_KEY, "rsa-1", "RS256"), jwk(EC_KEY, "ec-1", "ES256")]}
    )


@pytest.fixture
def google_chat(jwks: str) -> AuthScheme:
    return build_auth(
        dict(type="jwt", algorithms=["RS256"], jwks_url=jwks, issuer=ISSUER, audience=AUDIENCE)
    )


# --- Key sources ---------------------------------------------------------------------------


def test_a_token_signed_with_a_jwks_key_passes(google_chat: AuthScheme) -> None:
    check(google_chat, token(claims()))


def test_google_style_x509_certificates(server: KeyServer) -> None:
    url = server.serve_json("/x509", {"rsa-1": certificate(RSA_KEY)})
    scheme = build_auth(
        dict(type="jwt", algorithms=["RS256"], x509_url=url, issuer=ISSUER, audience=AUDIENCE)
    )
    check(scheme, token(claims()))
    with pytest.raises(AuthFailed, match="Signature verification failed"):
        check(scheme, token(claims(), key=OTHER_RSA_KEY))


def test_openid_metadata_leads_to_its_jwks(server: KeyServer, jwks: str) -> None:
    url = server.serve_json(
        "/.well-known/openid-configuration", {"issuer": "https://id.example", "jwks_uri": jwks}
    )
    scheme = build_auth(
        dict(
            type="jwt", algorithms=["ES256"], openid_url=url,
            issuer=["https://id.example", "id.example"],
            audience="https://bot.example/webhooks/chat/webhook",
            claims={"email": ISSUER, "email_verified": True},
        )
    )  # fmt: skip
    id_token = claims(
        iss="https://id.example", aud="https://bot.example/webhooks/chat/webhook",
        email=ISSUER, email_verified=True,
    )  # fmt: skip
    check(scheme, token(id_token, key=EC_KEY, alg="ES256", kid="ec-1"))
    check(scheme, token(dict(id_token, iss="id.example"), key=EC_KEY, alg="ES256", kid="ec-1"))
    with pytest.raises(AuthFailed, match="Invalid issuer"):
        check(
            scheme, token(dict(id_token, iss="other.example"), key=EC_KEY, alg="ES256", kid="ec-1")
        )
    assert server.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}
    other_account = dict(id_token, email="someone@example.com")
    with pytest.raises(AuthFailed, match="claim 'email' does not have the configured value"):
        check(scheme, token(other_account, key=EC_KEY, alg="ES256", kid="ec-1"))
    unverified = dict(id_token, email_verified=1)
    with pytest.raises(AuthFailed, match="claim 'email_verified'"):
        check(scheme, token(unverified, key=EC_KEY, alg="ES256", kid="ec-1"))


# --- What is refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, reason",
    [
        (claims(exp=NOW - 1), "token expired 1 s ago"),
        (claims(exp=NOW), "token expired 0 s ago"),
        (claims(nbf=NOW + 60), r"token not valid yet \(nbf is 60 s ahead\)"),
        (claims(iat=NOW + 60), r"token issued in the future \(iat is 60 s ahead\)"),
        (claims(aud="987654321"), "token refused: Audience doesn't match"),
        (claims(aud=None), 'token refused: Token is missing the "aud" claim'),
        (claims(iss="someone@example.com"), "token refused: Invalid issuer"),
        (claims(exp=None), 'token refused: Token is missing the "exp" claim'),
        (claims(exp=float("nan")), "token claim exp is not a finite number of seconds"),
        (claims(exp=float("inf")), "token claim exp is not a finite number of seconds"),
        (claims(exp=10**400), "token claim exp is not a finite number of seconds"),
        (claims(exp=str(int(NOW + 3600))), "token claim exp is not a number of seconds"),
        (claims(exp=True), "token claim exp is not a number of seconds"),
        (claims(nbf=float("nan")), "token claim nbf is not a finite number of seconds"),
    ],
    ids=[
        "expired", "expires now", "nbf in the future", "iat in the future", "wrong audience",
        "no audience", "wrong issuer", "no exp", "NaN exp", "inf exp", "huge exp",
        "string exp", "boolean exp", "NaN nbf",
    ],
)  # fmt: skip
def test_bad_claims_are_refused(
    google_chat: AuthScheme, payload: Dict[str, Any], reason: str
) -> None:
    with pytest.raises(AuthFailed, match=reason):
        check(google_chat, token(payload))


def test_leeway_allows_that_much_clock_difference(jwks: str) -> None:
    scheme = build_auth(
        dict(type="jwt", algorithms=["RS256"], jwks_url=jwks, audience=AUDIENCE, leeway=30)
    )
    check(scheme, token(claims(exp=NOW - 29, nbf=NOW + 29, iat=NOW + 29)))
    with pytest.raises(AuthFailed, match="token expired"):
        check(scheme, token(claims(exp=NOW - 30)))


def test_alg_none_is_refused(google_chat: AuthScheme) -> None:
    unsigned = forged({"alg": "none", "kid": "rsa-1"}, claims(), None)
    with pytest.raises(AuthFailed, match=r"token algorithm 'none' is not accepted \(only RS256\)"):
        check(google_chat, unsigned)


def test_an_hs256_token_signed_with_the_public_key_is_refused(google_chat: AuthScheme) -> None:
    # The classic confusion: the public key's PEM used as the HMAC secret.
    pem = RSA_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    confused = forged({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), pem)
    with pytest.raises(AuthFailed, match="token algorithm 'HS256' is not accepted"):
        check(google_chat, confused)


def test_a_token_of_another_public_key_algorithm_is_refused(jwks: str) -> None:
    scheme = build_auth(
        dict(type="jwt", algorithms=["RS256", "ES256"], jwks_url=jwks, audience=AUDIENCE)
    )
    check(scheme, token(claims(), key=EC_KEY, alg="ES256", kid="ec-1"))
    # ec-1 is an ES256 key: an RS256 token naming it is refused before any verification.
    with pytest.raises(AuthFailed, match="key 'ec-1' is for ES256, the token says RS256"):
        check(scheme, token(claims(), alg="RS256", kid="ec-1"))


def test_a_key_of_the_wrong_type_is_refused(server: KeyServer) -> None:
    url = server.serve_json("/jwks-no-alg", {"keys": [jwk(RSA_KEY, "k", None)]})
    scheme = build_auth(dict(type="jwt", algorithms=["ES256"], jwks_url=url, audience=AUDIENCE))
    with pytest.raises(AuthFailed, match="key 'k' is not a key for ES256"):
        check(scheme, token(claims(), key=EC_KEY, alg="ES256", kid="k"))


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "no Bearer token in the Authorization header"),
        ({"Authorization": "Basic cmFzYTpwdw=="}, "no Bearer token"),
        ({"Authorization": "Bearer "}, "no token in the Authorization header"),
        ({"Authorization": "Bearer not-a-jwt"}, "the Authorization header holds no JWT"),
    ],
    ids=["no header", "basic", "empty", "not a JWT"],
)
def test_requests_without_a_token_are_refused(
    google_chat: AuthScheme, headers: Dict[str, str], reason: str
) -> None:
    with pytest.raises(AuthFailed, match=reason):
        check(google_chat, None, **headers)


def test_the_bearer_prefix_is_read_in_any_case(google_chat: AuthScheme) -> None:
    check(google_chat, None, Authorization="bearer " + token(claims()))


def test_another_header_without_a_prefix(jwks: str) -> None:
    scheme = build_auth(
        dict(
            type="jwt", algorithms=["RS256"], jwks_url=jwks, audience=AUDIENCE,
            header="X-Signature-Token", prefix="",
        )
    )  # fmt: skip
    check(scheme, None, **{"X-Signature-Token": token(claims())})


# --- Key ids, caching, rate limits ---------------------------------------------------------


def test_an_unknown_kid_is_refused_and_refetches_at_most_once_a_minute(
    server: KeyServer, jwks: str, google_chat: AuthScheme
) -> None:
    rotated = token(claims(), key=OTHER_RSA_KEY, kid="rsa-2")
    with pytest.raises(AuthFailed, match="unknown key id 'rsa-2'"):
        check(google_chat, rotated)
    assert server.hits["/jwks"] == 1
    for later in (1, 30, 59):  # made-up key ids do not turn requests into fetches
        with pytest.raises(AuthFailed, match="unknown key id 'rsa-2'"):
            check(google_chat, rotated, now=NOW + later)
    assert server.hits["/jwks"] == 1
    # The platform rotates its keys; a minute on, the unknown kid fetches them again.
    server.serve_json(
        "/jwks", {"keys": [jwk(RSA_KEY, "rsa-1", None), jwk(OTHER_RSA_KEY, "rsa-2", None)]}
    )
    check(google_chat, rotated, now=NOW + 61)
    assert server.hits["/jwks"] == 2
    check(google_chat, token(claims()), now=NOW + 62)
    assert server.hits["/jwks"] == 2


def test_keys_are_cached_for_keys_max_age(server: KeyServer, jwks: str) -> None:
    scheme = build_auth(
        dict(type="jwt", algorithms=["RS256"], jwks_url=jwks, audience=AUDIENCE, keys_max_age=600)
    )
    for later in (0, 1, 599):
        check(scheme, token(claims()), now=NOW + later)
    assert server.hits["/jwks"] == 1
    check(scheme, token(claims()), now=NOW + 600)
    assert server.hits["/jwks"] == 2


def test_a_token_without_kid_uses_the_only_key(server: KeyServer) -> None:
    url = server.serve_json("/one", {"keys": [jwk(RSA_KEY, "rsa-1", "RS256")]})
    scheme = build_auth(dict(type="jwt", algorithms=["RS256"], jwks_url=url, audience=AUDIENCE))
    check(scheme, token(claims(), kid=None))


def test_a_token_without_kid_is_refused_when_there_are_several_keys(
    google_chat: AuthScheme,
) -> None:
    with pytest.raises(AuthFailed, match=r"names no key id \(kid\)"):
        check(google_chat, token(claims(), kid=None))


def test_concurrent_requests_share_one_fetch(server: KeyServer, google_chat: AuthScheme) -> None:
    request = IncomingRequest.from_parts(b"{}", {"Authorization": f"Bearer {token(claims())}"})

    async def many() -> None:
        await asyncio.gather(*(google_chat.check(request, None, NOW) for _ in range(20)))

    asyncio.run(many())
    assert server.hits["/jwks"] == 1


# --- Key server trouble: AuthUnavailable (503), never a pass ------------------------------


def scheme_for(url: str, **keys: Any) -> AuthScheme:
    return build_auth(
        dict(type="jwt", algorithms=["RS256"], jwks_url=url, audience=AUDIENCE, **keys)
    )


def test_a_key_server_that_is_down(server: KeyServer) -> None:
    with pytest.raises(AuthUnavailable, match="is unreachable"):
        check(scheme_for(closed_port_url()), token(claims()))


@pytest.mark.parametrize(
    "route, reason",
    [
        ((500, b"oops"), "answered HTTP 500"),
        ((404, b"{}"), "answered HTTP 404"),
        ((200, b"<html>keys</html>"), "not JSON"),
        ((200, b"\xff\xfe"), "not JSON"),
        ((200, b'{"keys": "none"}'), "not a JWK set"),
        ((200, b"[1, 2]"), "not a JWK set"),
        ((200, b'{"keys": [{"kty": "RSA", "n": "??", "e": "AQAB"}, {"kty": "oct"}]}'),
         "no usable signing key"),
        ((200, b"{" * 10 + b" " * 1_100_000), "more than 1 MiB"),
    ],
    ids=["500", "404", "html", "not UTF-8", "keys not a list", "a list", "no usable key", "huge"],
)  # fmt: skip
def test_a_key_server_answering_garbage(server: KeyServer, route: Route, reason: str) -> None:
    server.routes["/garbage"] = route
    with pytest.raises(AuthUnavailable, match=reason):
        check(scheme_for(server.url("/garbage")), token(claims()))


@pytest.mark.parametrize("key_url", ["jwks_url", "x509_url", "openid_url"])
def test_a_key_server_redirect_is_not_followed(server: KeyServer, key_url: str) -> None:
    # The keys the redirect points to would verify the token: following it would pass.
    documents = {
        "jwks_url": {"keys": [jwk(RSA_KEY, "rsa-1", "RS256")]},
        "x509_url": {"rsa-1": certificate(RSA_KEY)},
        "openid_url": {
            "jwks_uri": server.serve_json("/jwks", {"keys": [jwk(RSA_KEY, "rsa-1", None)]})
        },
    }
    server.redirects["/moved"] = server.serve_json("/keys", documents[key_url])
    scheme = build_auth(
        {
            "type": "jwt",
            "algorithms": ["RS256"],
            "audience": AUDIENCE,
            key_url: server.url("/moved"),
        }
    )
    with pytest.raises(AuthUnavailable, match=r"answered HTTP 302 \(a redirect, not followed"):
        check(scheme, token(claims()))
    assert (server.hits["/moved"], server.hits["/keys"]) == (1, 0)


def test_an_openid_jwks_uri_that_redirects_is_not_followed(server: KeyServer) -> None:
    server.redirects["/moved-jwks"] = server.serve_json(
        "/jwks", {"keys": [jwk(RSA_KEY, "rsa-1", None)]}
    )
    url = server.serve_json("/openid", {"jwks_uri": server.url("/moved-jwks")})
    scheme = build_auth(dict(type="jwt", algorithms=["RS256"], openid_url=url, audience=AUDIENCE))
    with pytest.raises(AuthUnavailable, match=r"moved-jwks answered HTTP 302 \(a redirect"):
        check(scheme, token(claims()))
    assert server.hits["/jwks"] == 0


def test_a_key_server_that_does_not_answer_in_time(server: KeyServer) -> None:
    server.routes["/slow"] = "hang"
    with pytest.raises(AuthUnavailable, match=r"did not answer within 0\.2 s"):
        check(scheme_for(server.url("/slow"), fetch_timeout=0.2), token(claims()))


def test_after_a_failure_requests_fail_fast_then_retry(server: KeyServer) -> None:
    server.routes["/flaky"] = (503, b"")
    scheme = scheme_for(server.url("/flaky"))
    with pytest.raises(AuthUnavailable, match="answered HTTP 503"):
        check(scheme, token(claims()))
    with pytest.raises(AuthUnavailable, match="answered HTTP 503"):
        check(scheme, token(claims()), now=NOW + 9)
    assert server.hits["/flaky"] == 1  # the second request did not wait for the server
    server.serve_json("/flaky", {"keys": [jwk(RSA_KEY, "rsa-1", "RS256")]})
    check(scheme, token(claims()), now=NOW + 10)
    assert server.hits["/flaky"] == 2


def test_expired_keys_are_not_used_while_the_server_is_down(server: KeyServer, jwks: str) -> None:
    scheme = scheme_for(jwks, keys_max_age=600)
    check(scheme, token(claims()))
    server.routes["/jwks"] = (500, b"")
    with pytest.raises(AuthUnavailable, match="answered HTTP 500"):
        check(scheme, token(claims()), now=NOW + 600)


@pytest.mark.parametrize(
    "metadata, reason",
    [
        ({"issuer": "https://id.example"}, "names no https jwks_uri"),
        ({"jwks_uri": "http://keys.example/jwks"}, "names no https jwks_uri"),
        ({"jwks_uri": 7}, "names no https jwks_uri"),
    ],
    ids=["no jwks_uri", "plain http elsewhere", "not a string"],
)
def test_openid_metadata_without_a_usable_jwks_uri(
    server: KeyServer, metadata: Dict[str, Any], reason: str
) -> None:
    url = server.serve_json("/openid", metadata)
    scheme = build_auth(dict(type="jwt", algorithms=["RS256"], openid_url=url, audience=AUDIENCE))
    with pytest.raises(AuthUnavailable, match=reason):
        check(scheme, token(claims()))


def test_a_list_with_an_unavailable_scheme_answers_unavailable(server: KeyServer) -> None:
    # The jwt scheme could not check, and might have accepted: 503 lets the platform retry.
    scheme = build_auth(
        [
            dict(type="jwt", algorithms=["RS256"], jwks_url=closed_port_url(), audience=AUDIENCE),
            dict(
                type="jwt", algorithms=["HS256"], secret_env="VONAGE_SIGNATURE_SECRET", max_age=300
            ),
        ]
    )
    with pytest.raises(AuthUnavailable, match=r"no scheme accepted the request \(jwt: key server"):
        check(scheme, token(claims()))


# --- Vonage: HS256 with payload_hash ---------------------------------------------------------

VONAGE = dict(
    type="jwt", algorithms=["HS256"], secret_env="VONAGE_SIGNATURE_SECRET",
    required_claims=["iat"], max_age=300, body_hash_claim="payload_hash",
)  # fmt: skip
VONAGE_BODY = b'{"channel":"sms","message_uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab","text":"Hi"}'


@pytest.fixture
def vonage(monkeypatch: pytest.MonkeyPatch) -> AuthScheme:
    monkeypatch.setenv("VONAGE_SIGNATURE_SECRET", VONAGE_SECRET)
    return build_auth(VONAGE)


def vonage_token(body: bytes = VONAGE_BODY, secret: str = VONAGE_SECRET, **changes: Any) -> str:
    payload = {
        "iat": int(NOW) - 5, "jti": "c5ba8f24-1a14-4c10-bfdf-3fbe8ce511b5", "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(), "api_key": "a1b2c3d4",
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    }  # fmt: skip
    payload.update(changes)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, "HS256")


def test_vonage_signed_webhook_passes(vonage: AuthScheme) -> None:
    check(vonage, vonage_token(), VONAGE_BODY)


def test_vonage_refuses_a_body_that_does_not_match_payload_hash(vonage: AuthScheme) -> None:
    with pytest.raises(AuthFailed, match="body does not match the token's payload_hash"):
        check(vonage, vonage_token(), VONAGE_BODY.replace(b"Hi", b"Ho"))


@pytest.mark.parametrize(
    "token_, reason",
    [
        (dict(payload_hash=None), 'Token is missing the "payload_hash" claim'),
        (dict(payload_hash=123), "holds no body hash"),
        (dict(iat=int(NOW) - 301), "token issued more than 300 s ago"),
        (dict(iat=None), 'Token is missing the "iat" claim'),
        (dict(secret="another-secret-of-at-least-32-bytes"), "Signature verification failed"),
    ],
    ids=["no payload_hash", "payload_hash not a string", "too old", "no iat", "other secret"],
)
def test_vonage_refuses(vonage: AuthScheme, token_: Dict[str, Any], reason: str) -> None:
    with pytest.raises(AuthFailed, match=reason):
        check(vonage, vonage_token(**token_), VONAGE_BODY)


def test_vonage_payload_hash_in_upper_case_hex_passes(vonage: AuthScheme) -> None:
    upper = hashlib.sha256(VONAGE_BODY).hexdigest().upper()
    check(vonage, vonage_token(payload_hash=upper), VONAGE_BODY)


def test_an_hs256_scheme_refuses_public_key_tokens(vonage: AuthScheme) -> None:
    with pytest.raises(AuthFailed, match=r"token algorithm 'RS256' is not accepted \(only HS256\)"):
        check(vonage, token({"iat": NOW, "payload_hash": "x"}))


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_or_unset_jwt_secret_refuses_every_token(
    monkeypatch: pytest.MonkeyPatch, value: Optional[str]
) -> None:
    if value is None:
        monkeypatch.delenv("VONAGE_SIGNATURE_SECRET", raising=False)
    else:
        monkeypatch.setenv("VONAGE_SIGNATURE_SECRET", value)
    scheme = build_auth(VONAGE)
    assert scheme.env_names() == ["VONAGE_SIGNATURE_SECRET"]
    with pytest.raises(AuthFailed, match="environment variable VONAGE_SIGNATURE_SECRET is"):
        check(scheme, vonage_token(secret="any secret, as the scheme has none at all"), VONAGE_BODY)


def test_a_base64_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VONAGE_SIGNATURE_SECRET", base64.b64encode(VONAGE_SECRET.encode()).decode())
    check(build_auth(dict(VONAGE, secret_encoding="base64")), vonage_token(), VONAGE_BODY)
    monkeypatch.setenv("VONAGE_SIGNATURE_SECRET", "not base64!")
    scheme = build_auth(dict(VONAGE, secret_encoding="base64"))
    with pytest.raises(AuthFailed, match="is not valid base64"):
        check(scheme, vonage_token(), VONAGE_BODY)


def test_the_audience_can_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, jwks: str
) -> None:
    monkeypatch.setenv("CHAT_PROJECT_NUMBER", AUDIENCE)
    section = dict(
        type="jwt", algorithms=["RS256"], jwks_url=jwks, audience_env="CHAT_PROJECT_NUMBER"
    )
    scheme = build_auth(section)
    assert scheme.env_names() == ["CHAT_PROJECT_NUMBER"]
    check(scheme, token(claims()))
    monkeypatch.setenv("CHAT_PROJECT_NUMBER", "")
    with pytest.raises(AuthFailed, match="CHAT_PROJECT_NUMBER is empty"):
        check(build_auth(section), token(claims(aud="")))


# --- Configuration ---------------------------------------------------------------------------

KEYS = "https://www.googleapis.com/service_accounts/v1/jwk/chat@system.gserviceaccount.com"


@pytest.mark.parametrize(
    "section, problem",
    [
        (dict(algorithms=["HS256"]), "'secret_env' is a required property"),
        (dict(algorithms=["HS256"], secret_env="S", jwks_url=KEYS), "with secret_env alone"),
        (dict(algorithms=["HS256", "RS256"], secret_env="S"), "'RS256' is not one of"),
        (dict(algorithms=["RS256"], jwks_url=KEYS), "and an audience"),
        (dict(algorithms=["RS256"], audience="a"), "one of jwks_url, x509_url and openid_url"),
        (dict(algorithms=["RS256"], audience="a", jwks_url=KEYS, x509_url=KEYS),
         "exactly one of jwks_url"),
        (dict(algorithms=["RS256"], audience="a", jwks_url="http://keys.example/jwks"),
         "does not match"),
        (dict(algorithms=["RS256"], audience="a", jwks_url="ftp://keys.example/jwks"),
         "does not match"),
        (dict(algorithms=["none"], secret_env="S"), "'none' is not one of"),
        (dict(algorithms=[], secret_env="S"), r"algorithms: \[\] is too short"),
        (dict(algorithms=["HS256"], secret_env="S", required_claims=["iat"]),
         "a token must expire"),
        (dict(algorithms=["RS256"], jwks_url=KEYS, audience="a", audience_env="A"),
         "give audience or audience_env, not both"),
        (dict(algorithms=["HS256"], secret_env="S", fetch_timeout=60), "greater than the maximum"),
        (dict(algorithms=["HS256"], secret_env="S", key="x"), "Additional properties"),
    ],
    ids=[
        "HS without secret", "HS with key URL", "HS mixed with RS", "RS without audience",
        "RS without key URL", "two key URLs", "plain http elsewhere", "ftp", "alg none",
        "no algorithms", "a token that never expires", "audience twice", "long timeout",
        "unknown key",
    ],
)  # fmt: skip
def test_bad_jwt_sections_are_refused(section: Dict[str, Any], problem: str) -> None:
    section = dict(type="jwt", **section)
    messages = [e.message for e in jsonschema.Draft7Validator(auth_schema()).iter_errors(section)]
    assert messages, "the auth schema accepted it"
    with pytest.raises(AuthConfigError, match=problem):
        build_auth(section)


def test_google_chat_configurations_are_valid() -> None:
    validator = jsonschema.Draft7Validator(auth_schema())
    sections = [
        dict(
            type="jwt", algorithms=["RS256"], issuer=ISSUER, audience_env="CHAT_PROJECT_NUMBER",
            x509_url="https://www.googleapis.com/service_accounts/v1/metadata/x509/"
            "chat@system.gserviceaccount.com",
        ),
        dict(type="jwt", algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE, jwks_url=KEYS),
        dict(
            type="jwt", algorithms=["RS256"],
            issuer=["https://accounts.google.com", "accounts.google.com"],
            audience="https://bot.example/webhooks/chat/webhook",
            openid_url="https://accounts.google.com/.well-known/openid-configuration",
            claims={"email": ISSUER, "email_verified": True},
        ),
        VONAGE,
    ]  # fmt: skip
    for section in sections:
        assert not list(validator.iter_errors(section)), section
