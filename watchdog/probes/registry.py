"""Build probe objects from their config models (code defines kinds, YAML defines instances)."""

from __future__ import annotations

from watchdog.clock import Clock
from watchdog.config.probes import HttpProbeConfig, JourneyProbeConfig, ProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.probes.base import Probe


def build_probe(config: ProbeConfig, *, defaults: ProbeDefaults, clock: Clock) -> Probe:
    # Imports are local so `watchdog validate` stays fast and a kind's driver loads only when used.
    if isinstance(config, HttpProbeConfig):
        from watchdog.probes.http import HttpProbe

        return HttpProbe(config, defaults=defaults, clock=clock)
    if isinstance(config, JourneyProbeConfig):
        from watchdog.probes.journey import JourneyProbe

        return JourneyProbe(config, defaults=defaults, clock=clock)
    from watchdog.probes.postgres.probe import PostgresProbe

    return PostgresProbe(config, defaults=defaults, clock=clock)
