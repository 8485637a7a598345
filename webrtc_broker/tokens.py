"""Client tokens: JWTs signed with a shared key (HS256), with an expiry and a subject.

The coordinator (``/connect?token=``) and every comm server (the AUTH body)
verify the same token with the same key, so a client proves who it is twice
without either service calling the other. The token's ``sub`` claim is the
identity a comm server stamps on TOPIC_IDENTITY frames; ``exp`` is required,
so a leaked token stops working on its own.

Only HS256 is accepted, whatever the token's header says: accepting the
header's choice is how ``alg: none`` and key-confusion attacks get in.
"""

from __future__ import annotations

import time

import jwt

from webrtc_broker.auth import AuthError, ClientAuthenticator, Identity, OpenClientAuthenticator

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
"""RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (256 bits)."""


def check_secret(secret: str) -> bytes:
    """The key as bytes; refuses keys too short to resist brute force."""
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"a JWT secret must be at least {MIN_SECRET_BYTES} bytes (HS256), got {len(key)}"
        )
    return key


def issue_token(
    secret: str, subject: str, ttl: float, *, now: float | None = None, **claims: object
) -> str:
    """A signed token for ``subject`` that expires ``ttl`` seconds from ``now``."""
    if not subject:
        raise ValueError("the subject must not be empty")
    issued = int(time.time() if now is None else now)
    payload: dict[str, object] = {**claims, "sub": subject, "iat": issued}
    payload["exp"] = issued + max(1, round(ttl))
    return jwt.encode(payload, check_secret(secret), algorithm=ALGORITHM)


class JwtClientAuthenticator:
    """Accepts a client whose credentials are a valid, unexpired token signed with our key.

    The identity is the token's ``sub`` claim. ``leeway`` (seconds) tolerates
    clock skew between the issuer and the broker.
    """

    def __init__(self, secret: str, *, leeway: float = 0.0) -> None:
        self._key = check_secret(secret)
        self._leeway = leeway

    def authenticate(self, credentials: bytes) -> Identity:
        if not credentials:
            raise AuthError("a token is required")
        try:
            token = credentials.decode("ascii")
        except UnicodeDecodeError:
            raise AuthError("malformed token: not ASCII") from None
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad token signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the required {exc.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not valid yet") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(f"token not signed with {ALGORITHM}") from None
        except jwt.DecodeError:
            raise AuthError("malformed token") from None
        except jwt.InvalidTokenError as exc:
            # The message names the bad claim (type or value), never the token itself.
            raise AuthError(f"invalid token: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError("token subject must be a non-empty string")
        return Identity(subject.encode())


def client_authenticator(kind: str, secret: str | None) -> ClientAuthenticator:
    """The authenticator a service's configuration asks for (``none`` or ``jwt``)."""
    if kind == "jwt":
        if secret is None:
            raise ValueError("client_auth 'jwt' needs client_jwt_secret")
        return JwtClientAuthenticator(secret)
    if kind != "none":
        raise ValueError(f"unknown client_auth {kind!r}")
    return OpenClientAuthenticator()
