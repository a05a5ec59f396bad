"""The one place a probe kind is registered: a config model type and the function that builds its probe.

A new kind is its config model (in ``watchdog.config``, added to the ``ProbeConfig`` union), its module
here, and one line in ``PROBE_KINDS``; nothing else dispatches on the kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watchdog.config.gcp import GoogleCloud
from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.probes import (
    CloudRunTrafficProbeConfig,
    HttpProbeConfig,
    JourneyProbeConfig,
    ProbeConfig,
)
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import Clock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes.base import Probe

if TYPE_CHECKING:
    import httpx

SHARED_CLIENT_MAX_CONNECTIONS = 100

RUN_GRACE_S = 2.0
"""A probe bounds itself by its timeout; ``run_bounded`` allows this much more before giving up on it."""


@dataclass
class BuildContext:
    """What a probe factory may use: defaults, the clock, and the shared HTTP clients (one per TLS-verify
    mode: a client per probe cost ~23 KB each, ~12 MB at 500 probes, for pools idle between runs)."""

    defaults: ProbeDefaults
    clock: Clock
    http_clients: dict[bool, httpx.AsyncClient] = field(default_factory=dict)
    google_cloud: GoogleCloud | None = None
    """``google_cloud`` settings, for checks that read Google Cloud (a Cloud Monitoring host source)."""


def _http(config: Any, ctx: BuildContext) -> Probe:
    from watchdog.probes.http import HttpProbe

    verify = config.tls.verify if config.tls is not None else True
    return HttpProbe(config, defaults=ctx.defaults, clock=ctx.clock, client=ctx.http_clients.get(verify))


def _journey(config: Any, ctx: BuildContext) -> Probe:
    from watchdog.probes.journey import JourneyProbe

    return JourneyProbe(config, defaults=ctx.defaults, clock=ctx.clock)


def _postgres(config: Any, ctx: BuildContext) -> Probe:
    # Imported on use: asyncpg and the check families cost memory a daemon without DB probes never needs.
    from watchdog.probes.postgres.probe import PostgresProbe

    return PostgresProbe(config, defaults=ctx.defaults, clock=ctx.clock, google_cloud=ctx.google_cloud)


def _cloud_run_traffic(config: Any, ctx: BuildContext) -> Probe:
    # Imported on use: the Cloud Monitoring client is loaded only when such a probe is configured.
    from watchdog.probes.cloud_run_traffic import CloudRunTrafficProbe

    return CloudRunTrafficProbe(config, defaults=ctx.defaults, clock=ctx.clock, google_cloud=ctx.google_cloud)


PROBE_KINDS: dict[type[Any], Callable[[Any, BuildContext], Probe]] = {
    HttpProbeConfig: _http,
    JourneyProbeConfig: _journey,
    PostgresProbeConfig: _postgres,
    CloudRunTrafficProbeConfig: _cloud_run_traffic,
}


class ProbeBuilder:
    """Builds the probes of one daemon; ``aclose`` closes the shared clients after the probes."""

    def __init__(
        self, *, defaults: ProbeDefaults, clock: Clock, google_cloud: GoogleCloud | None = None
    ) -> None:
        self._ctx = BuildContext(defaults=defaults, clock=clock, google_cloud=google_cloud)

    def build_all(self, configs: Sequence[ProbeConfig]) -> list[Probe]:
        http = [c for c in configs if isinstance(c, HttpProbeConfig)]
        if http:
            from watchdog.probes._client import make_client
            from watchdog.probes.http import keepalive_for, probe_timing

            defaults = self._ctx.defaults
            timing = [probe_timing(c.interval, c.timeout, defaults) for c in http]
            keepalive = max(keepalive_for(interval) for interval, _ in timing)
            default_timeout = max(timeout for _, timeout in timing)
            for verify in {c.tls.verify if c.tls is not None else True for c in http}:
                self._ctx.http_clients[verify] = make_client(
                    default_timeout,
                    verify=verify,
                    keepalive_s=keepalive,
                    max_connections=SHARED_CLIENT_MAX_CONNECTIONS,
                )
        return [self.build(c) for c in configs]

    def build(self, config: ProbeConfig) -> Probe:
        factory = PROBE_KINDS.get(type(config))
        if factory is None:
            raise TypeError(f"no probe kind registered for {type(config).__name__}")
        return factory(config, self._ctx)

    async def aclose(self) -> None:
        clients, self._ctx.http_clients = list(self._ctx.http_clients.values()), {}
        for client in clients:
            await client.aclose()


def build_probe(config: ProbeConfig, *, defaults: ProbeDefaults, clock: Clock) -> Probe:
    """One probe with its own client (closed by its ``aclose``)."""
    return ProbeBuilder(defaults=defaults, clock=clock).build(config)


async def run_bounded(probe: Probe, clock: Clock) -> Sequence[ProbeResult]:
    """Run a probe, bounded by its timeout (plus ``RUN_GRACE_S``); whatever goes wrong becomes a failed
    result. The daemon's jobs and ``watchdog check`` both run probes through here."""
    started = clock.now()
    try:
        async with asyncio.timeout(probe.timeout_s + RUN_GRACE_S):
            return await probe.run()
    except TimeoutError:
        reason = f"probe did not finish within its timeout ({probe.timeout_s:g} s)"
    except Exception as exc:
        reason = f"probe raised {type(exc).__name__}: {exc}"
    return [
        ProbeResult(
            probe=probe.name,
            kind=probe.kind,
            target="",
            outcome=Outcome.FAILED,
            latency_s=max(0.0, clock.now() - started),
            started_at=started,
            reason=reason,
        )
    ]
