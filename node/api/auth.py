"""Who may call `/v1`, how often, and with how large a body; every refusal is a JSON error that says what to fix.

Guarantees:
- A token is checked against SHA-256 digests in constant time; the token itself is never stored or logged. Tokens
  named by `token_env` are read once, at start; a missing variable stops the node with the key to fix.
- Each token has its own token bucket (`rate_per_s` sustained, `burst` at once); over it: 429 with `Retry-After`.
- A body over `api.max_body_bytes` is refused with 413 before it is read (declared length) or while it is read.
- Every error of the API, including aiohttp's own (404, 405, 413), is `{"error": "..."}` with the status.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from node.config import ApiToken
from node.errors import ConfigError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The authenticated client of a request (set by the auth middleware on `/v1` routes).
CLIENT: web.RequestKey[str] = web.RequestKey("client", str)
PROTECTED_PREFIX = "/v1/"


def json_error(status: int, message: str, **extra: object) -> web.Response:
    """An error answer: `{"error": message, **extra}` with HTTP `status`."""
    return web.json_response({"error": message, **extra}, status=status)


@dataclass(slots=True)
class Bucket:
    """A token bucket: `burst` requests at once, refilled at `rate_per_s`."""

    rate_per_s: float
    burst: int
    level: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> float:
        """Takes one request; returns 0 if allowed, else the seconds until one would be."""
        if self.level < 0:
            self.level, self.updated = float(self.burst), now
        self.level = min(float(self.burst), self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.level >= 1.0:
            self.level -= 1.0
            return 0.0
        return (1.0 - self.level) / self.rate_per_s


class Clients:
    """The configured API tokens, by SHA-256 digest, with one rate-limit bucket each."""

    def __init__(self, tokens: list[ApiToken]) -> None:
        self._by_digest: dict[bytes, ApiToken] = {}
        self._buckets: dict[str, Bucket] = {}
        for t in tokens:
            if t.token_env is not None:
                secret = os.environ.get(t.token_env)
                if not secret:
                    raise ConfigError(f"api.tokens[{t.name}].token_env: env variable {t.token_env} is not set")
                digest = hashlib.sha256(secret.strip().encode()).digest()
            else:
                assert t.token_sha256 is not None  # the config validator guarantees one of the two
                digest = bytes.fromhex(t.token_sha256)
            self._by_digest[digest] = t
            self._buckets[t.name] = Bucket(t.rate_per_s, t.burst)

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def identify(self, presented: str) -> ApiToken | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for known, token in self._by_digest.items():  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(known, digest):
                found = token
        return found

    def throttle(self, name: str) -> float:
        return self._buckets[name].take(time.monotonic())


def middlewares(clients: Clients, max_body_bytes: int) -> list[Callable[..., Awaitable[web.StreamResponse]]]:
    """Errors as JSON (outermost), then body size, then bearer token and rate limit on `/v1` routes."""

    @web.middleware
    async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"body larger than {max_body_bytes} bytes (api.max_body_bytes)")
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            reason = exc.reason
            if exc.status == 404:
                reason = f"no such endpoint: {request.method} {request.path} (see /openapi.json)"
            elif exc.status == 405:
                reason = f"{request.method} is not allowed on {request.path}"
            return json_error(exc.status, reason)

    @web.middleware
    async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > max_body_bytes:
            return json_error(
                413, f"body of {request.content_length} bytes is over api.max_body_bytes={max_body_bytes}"
            )
        return await handler(request)

    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PROTECTED_PREFIX):
            return await handler(request)
        if not clients:
            return json_error(403, "the job API is off: no tokens in api.tokens (see the operator's guide)")
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return json_error(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        token = clients.identify(presented.strip())
        if token is None:
            return json_error(401, "unknown bearer token")
        wait = clients.throttle(token.name)
        if wait > 0:
            return web.json_response(
                {"error": f"rate limit of {token.rate_per_s:g}/s (burst {token.burst}) exceeded; retry later"},
                status=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        request[CLIENT] = token.name
        return await handler(request)

    return [errors_as_json, body_limit, bearer]
