"""The HTTP client shared by the http and journey probes, plus small helpers both need.

Transport choice (measured with ``bench/http_transport.py``, loopback, 2 cores): httpx's default transport
(httpcore) costs several times the CPU per request of ``httpx_aiohttp.AiohttpTransport``, so ``"auto"``
picks the aiohttp transport and keeps the httpx API on top.

One client per probe instance, reused across runs (keep-alive), closed by the probe's ``aclose``. The
client's own cookie jar refuses every cookie: an http probe's runs stay independent, and a journey keeps a
fresh jar per run itself (:class:`httpx.Cookies`), so nothing leaks from one run into the next.

Credentials (:class:`BasicCredentials`) travel as an ``Authorization`` header only, never as userinfo in
the URL: the aiohttp transport rejects a request carrying both (httpx derives the header from the
userinfo), and a header set on the request is dropped by httpx when a redirect leaves the origin.
"""

from __future__ import annotations

import base64
import functools
import http.cookiejar
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpcore
import httpx

from watchdog.config.probes import BasicAuth

Transport = Literal["auto", "aiohttp", "httpx"]

DEFAULT_KEEPALIVE_S = 120.0
MAX_BODY_BYTES = 10 * 1024 * 1024
"""Bodies are read up to this size; a bigger body fails the check instead of exhausting memory."""

_WHITESPACE = re.compile(r"\s+")


@functools.cache
def ssl_context(verify: bool) -> ssl.SSLContext:
    """One context per verify mode for the whole process: loading the CA bundle costs milliseconds."""
    return httpx.create_ssl_context(verify=verify)


class _RefusingCookieJar(http.cookiejar.CookieJar):
    """The probe client's own jar: stores nothing, sends nothing (runs must stay independent)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


def make_client(
    timeout_s: float,
    *,
    transport: Transport = "auto",
    verify: bool = True,
    keepalive_s: float = DEFAULT_KEEPALIVE_S,
    max_connections: int = 10,
) -> httpx.AsyncClient:
    """An :class:`httpx.AsyncClient` for probes.

    ``transport``: ``"auto"`` (the measured-faster aiohttp transport when installed), ``"aiohttp"``, or
    ``"httpx"`` (httpx's default httpcore transport). ``keepalive_s`` should exceed the probe interval so
    connections are reused across runs; servers that close idle connections earlier are handled by the
    transports (aiohttp retries an idempotent request once on a stale pooled connection).
    """
    timeout = httpx.Timeout(timeout_s)
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_s,
    )
    context = ssl_context(verify)
    if transport in ("auto", "aiohttp"):
        try:
            import aiohttp
            from httpx_aiohttp import AiohttpTransport
        except ImportError:
            if transport == "aiohttp":
                raise
        else:

            def session() -> aiohttp.ClientSession:
                # Created lazily inside the running loop. aiohttp's own cookie jar is disabled: cookies are
                # handled on the httpx side (see module docstring).
                connector = aiohttp.TCPConnector(
                    ssl=context, limit=max_connections, keepalive_timeout=keepalive_s
                )
                return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

            return httpx.AsyncClient(
                transport=AiohttpTransport(verify=context, limits=limits, client=session),
                timeout=timeout,
                cookies=_RefusingCookieJar(),
            )
    elif transport != "httpx":
        raise ValueError(f"unknown transport {transport!r} (auto, aiohttp, httpx)")
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(verify=context, limits=limits),
        timeout=timeout,
        cookies=_RefusingCookieJar(),
    )


_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    """A user name and password for HTTP basic auth (RFC 7617, UTF-8); the password is kept out of repr."""

    username: str
    password: str = field(repr=False)

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")

    def secrets(self) -> frozenset[str]:
        """Every spelling of the password a reason could quote (raw, percent-encoded, in the header), for
        :func:`watchdog.core.redact.scrub`."""
        if not self.password:
            return frozenset()
        spellings = {self.password, quote(self.password, safe=""), quote(self.password)}
        return frozenset({*spellings, self.authorization.removeprefix("Basic ")})


class MissingPassword(Exception):
    """``basic_auth.password_env`` names a variable that is not set: the probe fails without sending."""


def credentials_from_env(auth: BasicAuth, environ: Mapping[str, str] | None = None) -> BasicCredentials:
    """``auth``'s user name with the password from its environment variable; :class:`MissingPassword`
    when the variable is unset or empty (an empty password is far more often a deployment slip)."""
    password = (os.environ if environ is None else environ).get(auth.password_env, "")
    if not password:
        raise MissingPassword(f"basic_auth: environment variable {auth.password_env} is not set")
    return BasicCredentials(auth.username, password)


def take_credentials(url: httpx.URL) -> tuple[httpx.URL, BasicCredentials | None]:
    """``url`` without its userinfo, and the userinfo (percent-decoded) as basic-auth credentials."""
    if not url.userinfo:
        return url, None
    return url.copy_with(userinfo=b""), BasicCredentials(url.username, url.password)


def with_authorization(
    headers: dict[str, str], credentials: BasicCredentials | None
) -> BasicCredentials | None:
    """Set ``credentials`` as the ``Authorization`` header unless ``headers`` already has one (an explicit
    header wins); returns the credentials actually sent."""
    if credentials is None or any(name.lower() == "authorization" for name in headers):
        return None
    headers["Authorization"] = credentials.authorization
    return credentials


def charset_of(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a Content-Type (httpx's own parser goes through ``email.message``)."""
    if not content_type:
        return None
    match = _CHARSET.search(content_type)
    return match.group(1) if match else None


def one_line(text: str, limit: int = 240) -> str:
    text = _WHITESPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_error(exc: BaseException, timeout_s: float) -> str:
    """``Type: message`` for a result's reason; timeouts read ``timeout after N s (...)``.

    The httpx transports wrap the underlying error (aiohttp, httpcore) and the aiohttp transport maps some
    of them oddly (a server disconnect becomes ``ConnectTimeout``), so the original cause is shown when
    there is one.
    """
    if isinstance(exc, httpx.TooManyRedirects):
        return one_line(str(exc))  # our own wording (see http.exchange), not httpx's
    shown: BaseException = exc
    if isinstance(exc, httpx.TransportError) and isinstance(exc.__cause__, Exception):
        shown = exc.__cause__
    message = one_line(str(shown))
    name = type(shown).__name__
    if isinstance(shown, TimeoutError | httpx.TimeoutException | httpcore.TimeoutException):
        return f"timeout after {timeout_s:g} s" + (f" ({name}: {message})" if message else "")
    return f"{name}: {message}" if message else name


async def read_body(response: httpx.Response, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """Read a streamed response's body, at most ``limit`` bytes; ``None`` when it is bigger."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
