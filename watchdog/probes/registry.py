"""Build probe objects from their config models (code defines kinds, YAML defines instances)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from watchdog.config.probes import HttpProbeConfig, JourneyProbeConfig, ProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import Clock
from watchdog.probes.base import Probe

if TYPE_CHECKING:
    import httpx

SHARED_CLIENT_MAX_CONNECTIONS = 100


class ProbeBuilder:
    """Builds the probes of one daemon. HTTP probes share one client (connection pool) per TLS-verify mode:
    a client per probe cost ~23 KB each (~12 MB at 500 probes) for pools that sit idle between runs. Each
    request still carries its own probe's timeout. ``aclose`` closes the shared clients after the probes."""

    def __init__(self, *, defaults: ProbeDefaults, clock: Clock) -> None:
        self._defaults = defaults
        self._clock = clock
        self._clients: dict[bool, httpx.AsyncClient] = {}

    def build_all(self, configs: Sequence[ProbeConfig]) -> list[Probe]:
        http = [c for c in configs if isinstance(c, HttpProbeConfig)]
        if http:
            from watchdog.probes._client import make_client
            from watchdog.probes.http import keepalive_for, probe_timing

            timing = [probe_timing(c.interval, c.timeout, self._defaults) for c in http]
            keepalive = max(keepalive_for(interval) for interval, _ in timing)
            default_timeout = max(timeout for _, timeout in timing)
            for verify in {c.tls.verify if c.tls is not None else True for c in http}:
                self._clients[verify] = make_client(
                    default_timeout,
                    verify=verify,
                    keepalive_s=keepalive,
                    max_connections=SHARED_CLIENT_MAX_CONNECTIONS,
                )
        return [self.build(c) for c in configs]

    def build(self, config: ProbeConfig) -> Probe:
        # Imports are local so `watchdog validate` stays fast and a kind's driver loads only when used.
        if isinstance(config, HttpProbeConfig):
            from watchdog.probes.http import HttpProbe

            verify = config.tls.verify if config.tls is not None else True
            return HttpProbe(
                config, defaults=self._defaults, clock=self._clock, client=self._clients.get(verify)
            )
        if isinstance(config, JourneyProbeConfig):
            from watchdog.probes.journey import JourneyProbe

            return JourneyProbe(config, defaults=self._defaults, clock=self._clock)
        from watchdog.probes.postgres.probe import PostgresProbe

        return PostgresProbe(config, defaults=self._defaults, clock=self._clock)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def build_probe(config: ProbeConfig, *, defaults: ProbeDefaults, clock: Clock) -> Probe:
    """One probe with its own client (closed by its ``aclose``)."""
    return ProbeBuilder(defaults=defaults, clock=clock).build(config)
