"""CDS client authentication: the JWT bearer token of CDS Hooks 2.0 "Trusting CDS Clients".

Every call (discovery, service, feedback) carries ``Authorization: Bearer <JWT>`` signed by the
CDS client. Checks, in order (each failure is a 401 with ``WWW-Authenticate: Bearer``):

* header: ``alg`` is one of FLUORO_CDS_JWT_ALGORITHMS (default ES384 and RS384, the algorithms
  2.0 recommends; ES256 and RS256 may be allowed; never ``none`` or HMAC, which 2.0 forbids),
  ``kid`` present, ``typ`` (when present) is ``JWT``;
* ``iss`` is on the issuer allowlist FLUORO_CDS_TRUSTED_ISSUERS (issuer -> JWKS URL; 2.0: "CDS
  Services SHOULD maintain an allowlist of the iss and jku fields");
* the key: from the issuer's JWKS (PyJWKClient, cached). A ``jku`` header is honoured only when
  it is that issuer's configured JWKS URL or on FLUORO_CDS_JKU_ALLOWLIST; the ``kid`` must be in
  the set, and the key must suit ``alg``;
* signature; ``aud`` (string or array) contains this endpoint's URL (2.0: "the URL of the CDS
  Service endpoint being invoked"; for feedback, the service's URL is accepted as well as its
  ``/feedback`` URL); ``exp`` not passed; ``iat`` and ``nbf`` not in the future (each with
  FLUORO_CDS_JWT_LEEWAY seconds, each reported by name); ``exp - iat`` at most
  FLUORO_CDS_JWT_MAX_LIFETIME;
* ``jti`` present and never seen before (replay cache: in memory, and in the state SQLite DB so
  every gunicorn worker sees it), kept until the token expires.

The token itself is never logged.
"""
from __future__ import annotations

import logging
import threading
import time

import jwt
from jwt import PyJWKClient

from .settings import Settings
from .state import StateStore

log = logging.getLogger("fluoro_cds.auth")

from .settings import JWT_ALGORITHMS as _KEY_TYPES  # alg -> JWK key type (kty)

# the EC curve each ES algorithm signs with (RFC 7518 section 3.4)
_CURVES = {"ES256": "P-256", "ES384": "P-384"}


MAX_TOKEN_CHARS = 16 * 1024  # a CDS client JWT is well under 2 kB; longer ones are not decoded


class AuthError(Exception):
    """The request is not authenticated (answered 401); the message never holds the token.
    `issuer` is the token's (unverified) ``iss`` when it had one, for the log."""

    def __init__(self, message: str, issuer: str | None = None):
        super().__init__(message)
        self.issuer = issuer


class _ReplayCache:
    """(issuer, jti) -> expiry, in memory, backed by the shared SQLite table."""

    def __init__(self, state: StateStore):
        self._state = state
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def claim(self, issuer: str, jti: str, expires: float) -> bool:
        now = time.time()
        key = (issuer, jti)
        with self._lock:
            if self._seen.get(key, 0) > now:
                return False
            if now >= self._next_purge:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
                self._next_purge = now + 60
                purge = True
            else:
                purge = False
            self._seen[key] = expires
        if purge:
            self._state.purge_jti(now)
        return self._state.claim_jti(issuer, jti, expires)


class JwtVerifier:
    """Verifies CDS client JWTs for one deployment (thread-safe; one per app)."""

    def __init__(self, settings: Settings, state: StateStore):
        self.algorithms = tuple(settings.jwt_algorithms)
        self.issuers = dict(settings.trusted_issuers)
        self.jku_allowlist = frozenset(settings.jku_allowlist)
        self.leeway = settings.jwt_leeway
        self.max_lifetime = settings.jwt_max_lifetime
        self.timeout = max(1.0, settings.fhir_connect_timeout + 2.0)
        self._clients: dict[str, PyJWKClient] = {}
        self._lock = threading.Lock()
        self._replay = _ReplayCache(state)

    def _jwks(self, url: str) -> PyJWKClient:
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                client = PyJWKClient(url, cache_keys=True, cache_jwk_set=True, lifespan=300,
                                     timeout=self.timeout)
                self._clients[url] = client
            return client

    def verify(self, authorization: str | None, audience: str | tuple[str, ...]) -> dict:
        """The verified claims of the request's bearer JWT (its ``aud`` holding `audience`, or one
        of them); AuthError otherwise."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("a bearer JWT is required (Authorization: Bearer <JWT>)")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
        return self._verify(token, audience)  # 401s are counted by the caller (metrics.jwt_refused)

    def _verify(self, token: str, audience: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("the bearer token is not a well-formed JWT") from None
        if not isinstance(header, dict) or not isinstance(unverified, dict):
            raise AuthError("the bearer token is not a well-formed JWT")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthError(f"JWT alg must be one of {', '.join(self.algorithms)}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("JWT header has no kid")
        typ = header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            raise AuthError("JWT typ must be JWT")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self.issuers:
            raise AuthError("JWT issuer is not trusted",
                            issuer if isinstance(issuer, str) else None)
        jwks_url = self.issuers[issuer]
        jku = header.get("jku")
        if jku is not None:
            if not isinstance(jku, str) or jku != jwks_url and jku not in self.jku_allowlist:
                raise AuthError("JWT jku is not an allowed JWK Set URL")
            jwks_url = jku
        try:
            return self._check(token, header, issuer, jwks_url, kid, alg, audience)
        except AuthError as exc:
            exc.issuer = issuer
            raise

    def _check(self, token: str, header: dict, issuer: str, jwks_url: str, kid: str, alg: str,
               audience: str | tuple[str, ...]) -> dict:
        """Key, signature and claims of a token from a trusted issuer."""
        try:
            signing_key = self._jwks(jwks_url).get_signing_key(kid)
        except (jwt.PyJWKClientConnectionError, OSError):
            raise AuthError("the issuer's JWK Set could not be fetched") from None
        except ValueError:  # the JWKS URL answered something that is not JSON
            raise AuthError("the issuer's JWK Set is not JSON") from None
        except jwt.PyJWKClientError:
            raise AuthError("JWT kid is not in the issuer's JWK Set") from None
        except (jwt.PyJWTError, KeyError, TypeError, AttributeError):  # JSON, but not a JWK Set
            raise AuthError("the issuer's JWK Set is not usable") from None
        jwk = signing_key._jwk_data if hasattr(signing_key, "_jwk_data") else {}
        if jwk.get("kty") and jwk["kty"] != _KEY_TYPES[alg]:
            raise AuthError("JWT alg does not match the key type")
        if jwk.get("alg") and jwk["alg"] != alg:
            raise AuthError("JWT alg does not match the key's alg")
        if jwk.get("crv") and alg in _CURVES and jwk["crv"] != _CURVES[alg]:
            raise AuthError("JWT alg does not match the key's curve")
        try:  # nbf is checked below, so that its failure is reported as nbf
            claims = jwt.decode(token, signing_key.key, algorithms=[alg],
                                audience=list(audience) if isinstance(audience, tuple) else audience,
                                issuer=issuer, leeway=self.leeway,
                                options={"require": ["iss", "aud", "exp", "iat", "jti"],
                                         "verify_nbf": False})
        except jwt.ExpiredSignatureError:
            raise AuthError("JWT has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("JWT aud is not this endpoint's URL") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("JWT iat is in the future") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"JWT has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("JWT signature is invalid") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"JWT is invalid ({type(exc).__name__})") from None
        jti, exp, iat = claims.get("jti"), claims["exp"], claims["iat"]
        nbf = claims.get("nbf")
        for name, value in (("exp", exp), ("iat", iat), ("nbf", nbf)):  # PyJWT's iat check takes "123" too
            if name == "nbf" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AuthError(f"JWT {name} must be a number (NumericDate, RFC 7519 section 2)")
        if nbf is not None and nbf > time.time() + self.leeway:
            raise AuthError("JWT nbf is in the future (not valid yet)")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise AuthError("JWT jti must be a non-empty string")
        if exp - iat > self.max_lifetime:
            raise AuthError(f"JWT lifetime (exp - iat) exceeds {self.max_lifetime} seconds")
        if not self._replay.claim(issuer, jti, float(exp) + self.leeway):
            raise AuthError("JWT jti was already used (replay)")
        return claims


def challenge(message: str) -> str:
    """WWW-Authenticate value for a failed JWT check (RFC 6750 section 3)."""
    safe = message.replace("\\", "").replace('"', "'")
    return f'Bearer realm="fluoro-cds", error="invalid_token", error_description="{safe}"'
