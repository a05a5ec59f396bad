"""The ``http`` probe kind: one request, checked against expectations, optionally a TLS expiry check.

Per run the probe builds one request on a client it keeps open between runs (keep-alive), reads the body
(bounded), and evaluates precompiled checks (:mod:`watchdog.probes._assertions`). Nothing is compiled per
run. The whole run is bounded by ``timeout_s`` (httpx timeouts plus an overall ``asyncio.timeout``), and any
error becomes a ``failed`` result with a ``Type: message`` reason.

TLS expiry: the aiohttp transport does not expose the peer certificate, so the probe does its own TLS
handshake to the host at most once per hour (cached per probe) and computes days left from the injected
clock on every run.

Credentials: userinfo in the URL (``https://user:pass@host/``) or ``basic_auth`` become an ``Authorization``
header (see :mod:`watchdog.probes._client`); the target shows ``***@`` for URL credentials, and every
spelling of the password is scrubbed from reasons (a server may echo what it was sent).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx

from watchdog.config.probes import HttpProbeConfig, TlsCheck
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import Clock
from watchdog.core.redact import redact_url, scrub
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.probes._assertions import NOT_JSON, Checks, compile_checks, degraded, failures, parse_json
from watchdog.probes._client import (
    MAX_BODY_BYTES,
    BasicCredentials,
    MissingPassword,
    charset_of,
    credentials_from_env,
    describe_error,
    make_client,
    read_body,
    ssl_context,
    take_credentials,
    with_authorization,
)

MAX_REDIRECTS = 10
TLS_REFRESH_S = 3600.0

log = logging.getLogger(__name__)


def keepalive_for(interval_s: float) -> float:
    """Keep idle connections a little longer than one interval, so the next run reuses them."""
    return min(max(interval_s * 1.5 + 5.0, 5.0), 900.0)


def probe_timing(
    interval: float | None, timeout: float | None, defaults: ProbeDefaults
) -> tuple[float, float]:
    return (
        interval if interval is not None else defaults.interval,
        timeout if timeout is not None else defaults.timeout,
    )


@dataclass(slots=True)
class Exchange:
    """A completed request/response, body read."""

    response: httpx.Response
    body: bytes | None
    """``None`` when the body was larger than :data:`MAX_BODY_BYTES` (not read further)."""
    latency_s: float

    def text(self) -> str:
        if not self.body:
            return ""
        try:
            return self.body.decode(
                charset_of(self.response.headers.get("content-type")) or "utf-8", errors="replace"
            )
        except LookupError:  # unknown charset name
            return self.body.decode("utf-8", errors="replace")


async def exchange(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    clock: Clock,
    started: float,
    follow_redirects: bool,
    cookies: httpx.Cookies | None = None,
) -> Exchange:
    """Send ``request`` (following redirects if asked, ``cookies`` being this run's jar), read the body.

    Latency runs from ``started`` (a ``clock.monotonic()`` value) to the last byte of the final response.
    """
    hops = 0
    while True:
        if cookies is not None:
            cookies.set_cookie_header(request)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if cookies is not None:
                cookies.extract_cookies(response)
            next_request = response.next_request
            if follow_redirects and next_request is not None:
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise httpx.TooManyRedirects(
                        f"too many redirects ({MAX_REDIRECTS}); the last pointed to "
                        f"{redact_url(str(next_request.url))}",
                        request=request,
                    )
                await read_body(response)  # drain (bounded), so the connection goes back to the pool
                # httpx hands the redirect the previous request's body as an unread stream, which the
                # aiohttp transport sends chunked, even on a GET, with a stray terminating chunk that
                # the server reads as garbage after the request; read into bytes it is sent as is.
                await next_request.aread()
                request = next_request
                continue
            body = await read_body(response)
        finally:
            await response.aclose()
        return Exchange(response, body, clock.monotonic() - started)


def evaluate(
    checks: Checks, result: Exchange, *, want_text: bool = False, want_json: bool = False
) -> tuple[list[str], list[str], str | None, Any]:
    """(failure reasons, degraded reasons, body text or None, parsed JSON or NOT_JSON)."""
    response = result.response
    status = response.status_code
    if result.body is None:
        return (
            [f"body larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB, not read further"],
            [],
            None,
            NOT_JSON,
        )
    text = result.text() if (want_text or checks.needs_text or status not in checks.status) else None
    data = parse_json(text) if text is not None and (want_json or checks.needs_json) else NOT_JSON
    failed = failures(checks, status, response.headers, text, data, result.latency_s)
    slow = [] if failed else degraded(checks, status, data, result.latency_s)
    return failed, slow, text, data


def outcome_of(failed: Sequence[str], slow: Sequence[str]) -> tuple[Outcome, str]:
    if failed:
        return Outcome.FAILED, "; ".join(failed)
    if slow:
        return Outcome.DEGRADED, "; ".join(slow)
    return Outcome.OK, ""


def encode_body(body: str | None, json_body: Any, headers: dict[str, str]) -> bytes | None:
    """Request body bytes; sets ``Content-Type: application/json`` for a JSON body unless given."""
    if json_body is not None:
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
    return body.encode() if body is not None else None


# --- TLS certificate expiry ----------------------------------------------------------------------------


def _der_element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag = der[pos]
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    return tag, pos, pos + length


def cert_not_after(der: bytes) -> float:
    """``notAfter`` of a DER X.509 certificate, as epoch seconds.

    ``SSLSocket.getpeercert()`` only decodes a certificate it verified; with ``verify: false`` (self-signed)
    only the DER form is available, so read Certificate → TBSCertificate → Validity → notAfter directly.
    """
    import calendar

    _, cert, _ = _der_element(der, 0)
    _, pos, _ = _der_element(der, cert)  # tbsCertificate
    tag, _, end = _der_element(der, pos)
    if tag == 0xA0:  # [0] EXPLICIT version
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        pos = _der_element(der, pos)[2]
    _, validity, _ = _der_element(der, pos)
    not_before_end = _der_element(der, validity)[2]
    tag, start, end = _der_element(der, not_before_end)
    text = der[start:end].decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSS (RFC 5280: YY >= 50 is 19YY)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSS
        raise ValueError(f"unexpected ASN.1 tag {tag:#x} for notAfter")
    fields = (
        int(text[0:4]),
        int(text[4:6]),
        int(text[6:8]),
        int(text[8:10]),
        int(text[10:12]),
        int(text[12:14]),
    )
    return float(calendar.timegm((*fields, 0, 0, 0)))


class CertExpiry:
    """The server certificate's ``notAfter``, from a separate handshake at most once per ``refresh_s``."""

    def __init__(self, url: httpx.URL, tls: TlsCheck, clock: Clock, refresh_s: float = TLS_REFRESH_S) -> None:
        self.host = url.host
        self.port = url.port or 443
        self.tls = tls
        self._clock = clock
        self._refresh_s = refresh_s
        self._not_after: float | None = None
        self._fetched_at = 0.0
        self.handshakes = 0

    async def not_after(self) -> float:
        now = self._clock.monotonic()
        if self._not_after is not None and now - self._fetched_at < self._refresh_s:
            return self._not_after
        self.handshakes += 1
        _, writer = await asyncio.open_connection(self.host, self.port, ssl=ssl_context(self.tls.verify))
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        finally:
            writer.transport.abort()  # no close_notify round trip: nothing else is sent on this connection
        if not der:
            raise ValueError("server sent no certificate")
        self._not_after = cert_not_after(der)
        self._fetched_at = now
        return self._not_after

    async def check(self, failed: list[str], slow: list[str]) -> Observation:
        days = (await self.not_after() - self._clock.now()) / 86400.0
        if days < 0:
            failed.append(f"TLS certificate expired {-days:.1f} days ago")
        elif days < self.tls.fail_days:
            failed.append(f"TLS certificate expires in {days:.1f} days (fail under {self.tls.fail_days:g})")
        elif days < self.tls.warn_days:
            slow.append(f"TLS certificate expires in {days:.1f} days (warn under {self.tls.warn_days:g})")
        return Observation("tls_cert_expiry_days", days)


# --- the probe -----------------------------------------------------------------------------------------


class HttpProbe:
    """One HTTP request per run: ``failed``/``degraded``/``ok`` from ``expect``, ``degraded_when``, ``tls``.

    ``client``: inject a shared or specially built client (the caller then owns and closes it); by default
    the probe makes its own with :func:`make_client` and closes it in :meth:`aclose`.
    """

    kind = "http"

    def __init__(
        self,
        config: HttpProbeConfig,
        *,
        defaults: ProbeDefaults,
        clock: Clock,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.name: str = config.name
        self.interval_s, self.timeout_s = probe_timing(config.interval, config.timeout, defaults)
        self.labels: Mapping[str, str] = MappingProxyType(dict(config.labels))
        self._clock = clock
        self._checks = compile_checks(config.expect, config.degraded_when)
        self._owns_client = client is None
        verify = config.tls.verify if config.tls is not None else True
        self._client = client or make_client(
            self.timeout_s, verify=verify, keepalive_s=keepalive_for(self.interval_s), max_connections=4
        )
        headers = dict(config.headers)
        self._content = encode_body(config.body, config.json_body, headers)
        url = httpx.URL(config.url)
        url = url.copy_merge_params(config.params) if config.params else url
        self.target = redact_url(str(url))
        self._url, credentials = take_credentials(url)
        self._missing_password = ""
        if config.basic_auth is not None:
            try:
                credentials = credentials_from_env(config.basic_auth)
            except MissingPassword as exc:
                self._missing_password = str(exc)
        sent: BasicCredentials | None = with_authorization(headers, credentials)
        self._secrets = set(sent.secrets()) if sent is not None else set()
        self._headers = headers or None
        self._tls_problem = ""
        self._tls: CertExpiry | None = None
        if config.tls is not None:
            if url.scheme == "https":
                self._tls = CertExpiry(url, config.tls, clock)
            elif config.tls.only_when_https:
                log.info("probe %s: tls check skipped, %s is not an https:// URL", self.name, self.target)
            else:  # validate rejects this; kept for configs built in code
                self._tls_problem = f"tls check needs an https:// URL, got {url.scheme}://"
        self._request: httpx.Request | None = None
        self._closed = False

    async def run(self) -> list[ProbeResult]:
        started_at = self._clock.now()
        started = self._clock.monotonic()
        observations: tuple[Observation, ...] = ()
        if self._missing_password:  # nothing is sent without the credentials the config asks for
            outcome, reason, latency_s = Outcome.FAILED, self._missing_password, 0.0
        else:
            try:
                async with asyncio.timeout(self.timeout_s):
                    outcome, reason, latency_s, observations = await self._check(started)
            except Exception as exc:  # CancelledError is not an Exception: cancellation propagates
                outcome, reason = Outcome.FAILED, describe_error(exc, self.timeout_s)
                latency_s = self._clock.monotonic() - started
        if self._secrets:
            reason = scrub(reason, self._secrets)
        return [
            ProbeResult(
                probe=self.name,
                kind=self.kind,
                target=self.target,
                outcome=outcome,
                latency_s=latency_s,
                started_at=started_at,
                reason=reason,
                labels=self.labels,
                observations=observations,
            )
        ]

    async def _check(self, started: float) -> tuple[Outcome, str, float, tuple[Observation, ...]]:
        config = self.config
        if self._request is None:
            # Built once: the request is static, and neither httpx nor the transports modify a sent
            # request (the client's cookie jar is inert, there is no auth flow). Saves ~10 µs per run.
            # The timeout travels with the request, so a client shared by many probes still applies
            # each probe's own bound.
            self._request = self._client.build_request(
                config.method, self._url, headers=self._headers, content=self._content, timeout=self.timeout_s
            )
        done = await exchange(
            self._client,
            self._request,
            clock=self._clock,
            started=started,
            follow_redirects=config.follow_redirects,
            cookies=httpx.Cookies() if config.follow_redirects else None,
        )
        failed, slow, _, _ = evaluate(self._checks, done)
        status = Observation("http_status_code", float(done.response.status_code))
        if self._tls_problem:
            failed.append(self._tls_problem)
            return Outcome.FAILED, "; ".join(failed), done.latency_s, (status,)
        if self._tls is None:
            outcome, reason = outcome_of(failed, slow)
            return outcome, reason, done.latency_s, (status,)
        try:
            expiry = await self._tls.check(failed, slow)
        except Exception as exc:
            failed.append(f"TLS check: {describe_error(exc, self.timeout_s)}")
            outcome, reason = outcome_of(failed, slow)
            return outcome, reason, done.latency_s, (status,)
        outcome, reason = outcome_of(failed, slow)
        return outcome, reason, done.latency_s, (status, expiry)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()
