"""Bearer tokens mapped to bus identities: who an HTTP request acts as on the bus.

A tokens file has one ``IDENTITY TOKEN`` pair a line (``#`` starts a comment)::

    # identity   token (at least 16 characters; `python -c "import secrets;
    #              print(secrets.token_urlsafe(24))"` makes one)
    operator     b3J0LXRva2VuLWZvci1vcGVyYXRvcg
    viewer       dmlld2VyLXRva2VuLWZvci10aGUtd2Fs

It must be private to its owner (mode 0600), as a key file is. A request carries its token as
``Authorization: Bearer TOKEN`` (or, for ``EventSource`` in a browser, which cannot set headers,
as the ``access_token`` query parameter). On a secured line the identity names a key pair in
the line's keys directory, and the gateway calls as that identity (``WebState.client``): the
broker's access list then decides, exactly as for any other client of that key.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bus.errors import ConfigError
from bus.security.files import mode_problem
from bus.security.keys import validate_key_name

__all__ = ["MIN_TOKEN_CHARS", "QUERY_PARAMETER", "TokenGate", "Tokens"]

#: Shorter tokens are refused when the file is read: a guessable token is no gate.
MIN_TOKEN_CHARS = 16
#: The query parameter that may carry the token (EventSource cannot send headers).
QUERY_PARAMETER = "access_token"


@dataclass(frozen=True, slots=True)
class Tokens:
    """Which identity each token stands for; ``source`` names the file, for messages."""

    identities: dict[str, str]
    source: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokens:
        """Read a tokens file (see the module docstring).

        Raises:
            ConfigError: the file is missing, unreadable, readable by others, empty, or a line
                is not ``IDENTITY TOKEN`` with a valid identity and a long enough token, or a
                token appears twice.
        """
        where = f"tokens file {path}"
        try:
            with open(path, "rb") as handle:
                problem = mode_problem(os.fstat(handle.fileno()).st_mode)
                data = handle.read()
        except FileNotFoundError:
            raise ConfigError(f"{where} not found") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
        if problem is not None:
            raise ConfigError(f"{where} is {problem}; run: chmod 600 {path}")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise ConfigError(f"{where} is not UTF-8 text") from None
        identities: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            if len(words) != 2:
                raise ConfigError(
                    f"{where}:{number}: expected `IDENTITY TOKEN`, got {len(words)} words"
                )
            identity, token = words
            try:
                validate_key_name(identity)
            except ConfigError as exc:
                raise ConfigError(f"{where}:{number}: {exc.message}") from None
            if len(token) < MIN_TOKEN_CHARS:
                raise ConfigError(
                    f"{where}:{number}: the token of {identity!r} is {len(token)} characters;"
                    f" at least {MIN_TOKEN_CHARS} are needed"
                )
            if token in identities:
                raise ConfigError(
                    f"{where}:{number}: this token is also given to {identities[token]!r}"
                )
            identities[token] = identity
        if not identities:
            raise ConfigError(f"{where} holds no token")
        return cls(identities, str(Path(path)))

    def identity(self, token: str) -> str | None:
        """The identity of ``token``, or None when no token matches.

        Every known token is compared in constant time, so the time taken says nothing about
        how much of a token was right.
        """
        found = None
        given = token.encode()
        for known, identity in self.identities.items():
            if hmac.compare_digest(known.encode(), given):
                found = identity
        return found

    @property
    def names(self) -> frozenset[str]:
        """Every identity a token stands for."""
        return frozenset(self.identities.values())


#: Paths a token guards when tokens are configured: the gateway (but its OpenAPI document,
#: which says nothing about the line) and the page's live data. The page's files are public.
GUARDED_PREFIXES = ("/api/", "/ui/")
PUBLIC_PATHS = frozenset({"/api/openapi.json"})


class TokenGate:
    """ASGI middleware: with tokens configured, a request to a guarded path needs a valid one
    (else 401 with a typed JSON error); the identity goes to ``request.state.identity``
    (None without tokens: the app's own connection)."""

    def __init__(self, app: ASGIApp, tokens: Tokens | None) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        scope["state"]["identity"] = None
        path: str = scope["path"]
        if self.tokens is None or path in PUBLIC_PATHS or not path.startswith(GUARDED_PREFIXES):
            await self.app(scope, receive, send)
            return
        token = _token(Headers(scope=scope), scope.get("query_string", b""))
        identity = None if token is None else self.tokens.identity(token)
        if identity is None:
            problem = "no token given" if token is None else "the token is not known"
            response = JSONResponse(
                {
                    "error": {
                        "code": "unauthenticated",
                        "message": f"{problem}: send `Authorization: Bearer TOKEN`",
                        "details": {},
                    }
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="linebus"'},
            )
            await response(scope, receive, send)
            return
        scope["state"]["identity"] = identity
        await self.app(scope, receive, send)


def _token(headers: Headers, query: bytes) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for key, text in parse_qsl(query.decode("latin-1")):
        if key == QUERY_PARAMETER and text:
            return text
    return None
