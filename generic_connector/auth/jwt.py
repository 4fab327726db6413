"""``jwt``: a JSON Web Token in a header (Google Chat, Vonage, OpenID Connect providers).

The token is verified with a shared secret (HS256/384/512) or with public keys published at
a URL: a JWK set (``jwks_url``), Google-style certificates (``x509_url``) or an OpenID
provider's metadata (``openid_url``, whose ``jwks_uri`` is then fetched); each URL may come
from an environment variable instead (``jwks_url_env``...). The accepted
algorithms are fixed in the configuration, never taken from the token: ``alg: none`` and an
HS256 token "signed" with a public key as its secret are refused. Time claims are checked
against the ``now`` each check is given.
"""

import hashlib
import math
import re
from typing import Any, Dict, List, Mapping, Optional

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from generic_connector.auth import AuthConfigError, AuthFailed, AuthScheme, register
from generic_connector.auth._common import (
    KeyFormatError,
    as_bytes,
    decode_base64,
    env_key,
    equal,
    key_problem,
)
from generic_connector.auth._expressions import RequestExpressions, expression_key
from generic_connector.auth._keys import KEY_URL_PATTERN, KeySet
from generic_connector.request import IncomingRequest

HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"]
PUBLIC_KEY_ALGORITHMS = [
    "ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512",
]  # fmt: skip
_KEY_URLS = {"jwks_url": "jwks", "x509_url": "x509", "openid_url": "openid"}
# Each URL, or the environment variable holding it.
_URL_KEYS = [*_KEY_URLS, *(f"{key}_env" for key in _KEY_URLS)]
_KEY_URL = re.compile(KEY_URL_PATTERN)
# The key types each algorithm family verifies with, by the algorithm name's first letters.
_KEY_TYPES: Dict[str, Any] = {
    "RS": rsa.RSAPublicKey,
    "PS": rsa.RSAPublicKey,
    "ES": ec.EllipticCurvePublicKey,
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}


def _key_url(description: str) -> Dict[str, Any]:
    return {
        "type": "string",
        "pattern": KEY_URL_PATTERN,
        "description": description,
        "x-hint": "an https URL (plain http only for localhost)",
    }


@register
class JwtScheme(AuthScheme):
    """A JWT in ``header`` (``Authorization: Bearer``) whose signature and claims check out."""

    name = "jwt"
    schema = {
        "description": "a JSON Web Token, checked with a shared secret or published public keys",
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "algorithms"],
        "properties": {
            "type": {"const": "jwt", "description": "A JSON Web Token in a header."},
            "algorithms": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS},
                "description": "The algorithms accepted, fixed here and never taken from the "
                "token ('none' never is). HS256/HS384/HS512 are checked with secret_env; the "
                "others with the keys at jwks_url, x509_url or openid_url (or the URL in "
                "jwks_url_env, x509_url_env or openid_url_env).",
            },
            "secret_env": env_key("HS algorithms: environment variable holding the secret."),
            "secret_encoding": {
                "enum": ["text", "base64"],
                "description": "How the secret is written: text (its UTF-8 bytes, the default) "
                "or base64.",
            },
            "jwks_url": _key_url("URL of a JWK set (RFC 7517) with the signing keys."),
            "x509_url": _key_url(
                "URL of a JSON object of key id to PEM certificate (Google service accounts)."
            ),
            "openid_url": _key_url(
                "URL of an OpenID provider's metadata "
                "(.../.well-known/openid-configuration); its jwks_uri holds the keys."
            ),
            "jwks_url_env": env_key("Environment variable holding jwks_url."),
            "x509_url_env": env_key("Environment variable holding x509_url."),
            "openid_url_env": env_key("Environment variable holding openid_url."),
            "keys_max_age": {
                "type": "number",
                "minimum": 60,
                "maximum": 86400,
                "description": "Seconds fetched keys are used before they are fetched again, "
                "default 3600. A token naming an unknown key id fetches them early, at most "
                "once a minute.",
            },
            "fetch_timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 30,
                "description": "Seconds a key fetch may take, default 5; a key server that does "
                "not answer in time makes the request fail with 503.",
            },
            "header": {
                "type": "string",
                "minLength": 1,
                "description": "The header carrying the token, default Authorization.",
            },
            "prefix": {
                "type": "string",
                "description": "Text before the token, default 'Bearer ' (its case ignored); "
                "'' when the header holds just the token.",
            },
            "issuer": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"type": "string", "minLength": 1},
                    },
                ],
                "description": "The iss claim required, or a list of those accepted (Google "
                "Chat: chat@system.gserviceaccount.com; Google ID tokens: "
                "[https://accounts.google.com, accounts.google.com]).",
            },
            "audience": {
                "type": "string",
                "minLength": 1,
                "description": "The aud claim required (Google Chat: the project number, or "
                "the app URL for ID tokens).",
            },
            "audience_env": env_key("Environment variable holding the aud claim required."),
            "leeway": {
                "type": "number",
                "minimum": 0,
                "maximum": 300,
                "description": "Seconds of clock difference allowed for exp, nbf and iat, "
                "default 0.",
            },
            "max_age": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "The token's iat must be at most this many seconds ago (tokens "
                "without exp, like Vonage's); makes iat required.",
            },
            "required_claims": {
                "type": "array",
                "uniqueItems": True,
                "items": {"type": "string", "minLength": 1},
                "description": "Claims that must be present, default [exp].",
            },
            "claims": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
                "description": "Claims that must have exactly these values (Google ID "
                "tokens: {email: chat@system.gserviceaccount.com, email_verified: true}).",
            },
            "claim_expressions": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": expression_key("An expression over the request."),
                "description": "Claims that must equal what an expression over the request "
                "gives ({sub: header('X-Account-Id')}, {aud: env('APP_ID')}); null, or no "
                "such claim, refuses the token.",
            },
            "body_hash_claim": {
                "type": "string",
                "minLength": 1,
                "description": "Claim holding the hex SHA-256 of the raw body (Vonage: "
                "payload_hash); a request whose body does not match is refused.",
            },
        },
        "allOf": [
            {
                "if": {
                    "required": ["algorithms"],
                    "properties": {"algorithms": {"contains": {"enum": HMAC_ALGORITHMS}}},
                },
                "then": {
                    "required": ["secret_env"],
                    "properties": {"algorithms": {"items": {"enum": HMAC_ALGORITHMS}}},
                    "not": {"anyOf": [{"required": [key]} for key in _URL_KEYS]},
                    "x-hint": "HS algorithms are checked with secret_env alone: no key URL, "
                    "no public-key algorithm beside them",
                },
                "else": {
                    "oneOf": [{"required": [key]} for key in _URL_KEYS],
                    "anyOf": [{"required": ["audience"]}, {"required": ["audience_env"]}],
                    "not": {"required": ["secret_env"]},
                    "x-hint": "public-key algorithms need exactly one of jwks_url, x509_url "
                    "and openid_url (or one of their _env), and an audience (the keys sign "
                    "tokens for others too)",
                },
            },
            {
                "not": {"required": ["audience", "audience_env"]},
                "x-hint": "give audience or audience_env, not both",
            },
            {
                "anyOf": [
                    {"required": ["max_age"]},
                    {"not": {"required": ["required_claims"]}},
                    {"properties": {"required_claims": {"contains": {"const": "exp"}}}},
                ],
                "x-hint": "a token must expire: keep exp in required_claims or set max_age",
            },
        ],
    }

    def __init__(self, section: Mapping[str, Any]) -> None:
        super().__init__(section)
        self.algorithms: List[str] = list(section["algorithms"])
        self.header: str = section.get("header", "Authorization")
        self.prefix: str = section.get("prefix", "Bearer ")
        issuer = section.get("issuer")
        self.issuer: Optional[Any] = [issuer] if isinstance(issuer, str) else issuer
        self.audience: Optional[str] = section.get("audience")
        if "audience_env" in section:
            self.audience = self.read_env(section["audience_env"])
        self.leeway: float = section.get("leeway", 0)
        self.max_age: Optional[float] = section.get("max_age")
        self.claims: Dict[str, Any] = dict(section.get("claims", {}))
        self.body_hash_claim: Optional[str] = section.get("body_hash_claim")
        required = list(section.get("required_claims", ["exp"]))
        for implied in ("iat" if self.max_age else None, self.body_hash_claim, *self.claims):
            if implied and implied not in required:
                required.append(implied)
        self.claim_expressions = RequestExpressions(
            self, dict(section.get("claim_expressions", {}))
        )
        for claim in self.claim_expressions.expressions:
            if claim not in required:
                required.append(claim)
        self.required_claims = required
        if "exp" not in required and self.max_age is None:
            raise AuthConfigError("jwt: keep exp in required_claims or set max_age")
        self.needs_body = self.claim_expressions.reads_body
        urls = [key for key in _URL_KEYS if key in section]
        hmac_only = all(alg in HMAC_ALGORITHMS for alg in self.algorithms)
        mixed = not hmac_only and any(alg in HMAC_ALGORITHMS for alg in self.algorithms)
        if (
            mixed
            or hmac_only != (not urls)
            or len(urls) > 1
            or hmac_only != ("secret_env" in section)
        ):
            raise AuthConfigError(
                "jwt: HS algorithms take secret_env; public-key algorithms one key URL"
            )
        self._secret: Optional[bytes] = None
        self._keys: Optional[KeySet] = None
        self._public = bool(urls)
        if urls:
            self._keys = self._key_set(section, urls[0])
        else:
            self._secret = self._read_secret(
                section["secret_env"], section.get("secret_encoding", "text")
            )

    def _key_set(self, section: Mapping[str, Any], key: str) -> Optional[KeySet]:
        """The keys at the configured URL, or at the URL in its variable (None, the scheme
        unusable, if that is unset, empty or no https URL)."""
        url: Optional[str] = section.get(key)
        if key.endswith("_env"):
            name, key = section[key], key[: -len("_env")]
            url = self.read_env(name)
            if url is not None and not _KEY_URL.match(url):
                error = KeyFormatError("is not an https URL (plain http only for localhost)")
                self.unusable(key_problem(name, error))
                url = None
        if url is None:
            return None
        return KeySet(
            url,
            _KEY_URLS[key],
            max_age=section.get("keys_max_age", 3600),
            timeout=section.get("fetch_timeout", 5),
        )

    def _read_secret(self, name: str, encoding: str) -> Optional[bytes]:
        value = self.read_env(name)
        if value is None:
            return None
        if encoding == "text":
            return value.encode("utf-8")
        return decode_base64(value, name, self)

    async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
        token = self._token(request)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthFailed(f"the {self.header} header holds no JWT: {error}") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            allowed = ", ".join(self.algorithms)
            raise AuthFailed(f"token algorithm {alg!r} is not accepted (only {allowed})")
        key = await self._public_key(header, alg, now) if self._public else self._secret
        if key is None:  # check() refuses before this
            raise AuthFailed("no usable secret")
        options: Dict[str, Any] = {
            # Time claims are checked below, against the injectable clock.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": self.audience is not None,
            "require": self.required_claims,
        }
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options=options,  # type: ignore[arg-type]
            )
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise AuthFailed(f"token refused: {error}") from None
        self._check_times(claims, now)
        for name, expected in self.claims.items():
            if not _same(claims.get(name), expected):
                raise AuthFailed(f"token claim {name!r} does not have the configured value")
        self._check_claim_expressions(claims, request, body, now)
        if self.body_hash_claim:
            self._check_body_hash(claims.get(self.body_hash_claim), request.body)

    def _token(self, request: IncomingRequest) -> str:
        value = (request.header(self.header) or "").strip()
        if self.prefix:
            if value.lower() == self.prefix.strip().lower():  # "Bearer" and nothing after it
                value = ""
            elif value[: len(self.prefix)].lower() != self.prefix.lower():
                raise AuthFailed(f"no {self.prefix.strip()} token in the {self.header} header")
            value = value[len(self.prefix) :].strip()
        if not value:
            raise AuthFailed(f"no token in the {self.header} header")
        return value

    async def _public_key(self, header: Dict[str, Any], alg: str, now: float) -> Any:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthFailed("the token's key id (kid) is not a string")
        if self._keys is None:  # check() refuses before this
            raise AuthFailed("no usable key URL")
        found = await self._keys.get(kid, now)
        if found.algorithm is not None and found.algorithm != alg:
            raise AuthFailed(f"key {kid!r} is for {found.algorithm}, the token says {alg}")
        if not isinstance(found.key, _KEY_TYPES[alg[:2]]):
            raise AuthFailed(f"key {kid!r} is not a key for {alg}")
        return found.key

    def _check_times(self, claims: Dict[str, Any], now: float) -> None:
        leeway = self.leeway
        exp = _numeric_date(claims, "exp")
        if exp is not None and now >= exp + leeway:
            raise AuthFailed(f"token expired {now - exp:.0f} s ago")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and now < nbf - leeway:
            raise AuthFailed(f"token not valid yet (nbf is {nbf - now:.0f} s ahead)")
        iat = _numeric_date(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise AuthFailed(f"token issued in the future (iat is {iat - now:.0f} s ahead)")
        if self.max_age is not None and (iat is None or now - iat > self.max_age + leeway):
            raise AuthFailed(f"token issued more than {self.max_age:g} s ago")

    def _check_claim_expressions(
        self, claims: Dict[str, Any], request: IncomingRequest, body: Any, now: float
    ) -> None:
        if not self.claim_expressions.expressions:
            return
        scope = self.claim_expressions.scope(request, body, now)
        for name in self.claim_expressions.expressions:
            expected = self.claim_expressions.value(name, scope)
            if expected is None or not _same(claims.get(name), expected):
                raise AuthFailed(f"token claim {name!r} does not have the value of its expression")

    def _check_body_hash(self, sent: Any, body: bytes) -> None:
        if not isinstance(sent, str):
            raise AuthFailed(f"token claim {self.body_hash_claim!r} holds no body hash")
        expected = hashlib.sha256(body).hexdigest().encode()
        if not equal(as_bytes(sent.lower()), expected):
            raise AuthFailed(f"body does not match the token's {self.body_hash_claim}")


def _numeric_date(claims: Dict[str, Any], name: str) -> Optional[float]:
    """A time claim as seconds: a finite JSON number (RFC 7519 NumericDate), else AuthFailed."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthFailed(f"token claim {name} is not a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):  # NaN would compare false with every limit
        raise AuthFailed(f"token claim {name} is not a finite number of seconds")
    return seconds


def _same(actual: Any, expected: Any) -> bool:
    """Equal JSON values, without Python's True == 1."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return actual == expected
