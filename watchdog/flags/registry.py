"""The one place a flag backend kind is registered: a config model type (``watchdog.config.flags``) and the
function that builds its backend. A new kind is its config model (added to the ``FlagConfig`` union), its
module here, and one line in ``FLAG_BACKENDS``; nothing else dispatches on the kind.

A factory gets the environment (passed in, never read from ``os.environ`` here) for the secrets the config
names (``dsn_env``, ``url_env``, ``token_env``) and raises FlagError when one is missing. The client
libraries (psycopg, redis, google-cloud-storage) are imported when their kind is built, not before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from watchdog.config.flags import (
    FlagConfig,
    FlagdFileFlagConfig,
    GcsFlagConfig,
    HttpFlagConfig,
    PostgresFlagConfig,
    RedisFlagConfig,
    UnleashFlagConfig,
)
from watchdog.core.clock import Clock
from watchdog.flags.base import FlagBackend

FlagBackendFactory = Callable[[Any, Mapping[str, str], Clock], FlagBackend]


def _flagd_file(config: FlagdFileFlagConfig, env: Mapping[str, str], clock: Clock) -> FlagBackend:
    from watchdog.flags.flagd_file import FlagdFileBackend

    return FlagdFileBackend(config.path, config.key, clock=clock)


def _postgres(config: PostgresFlagConfig, env: Mapping[str, str], clock: Clock) -> FlagBackend:
    from watchdog.flags.postgres import PostgresFlagBackend

    return PostgresFlagBackend.from_config(config, env, clock)


def _redis(config: RedisFlagConfig, env: Mapping[str, str], clock: Clock) -> FlagBackend:
    from watchdog.flags.redis import RedisFlagBackend

    return RedisFlagBackend.from_config(config, env, clock)


def _gcs(config: GcsFlagConfig, env: Mapping[str, str], clock: Clock) -> FlagBackend:
    from watchdog.flags.gcs import GcsFlagBackend

    return GcsFlagBackend.from_config(config, env, clock)


def _http(config: HttpFlagConfig, env: Mapping[str, str], clock: Clock) -> FlagBackend:
    from watchdog.flags.http import HttpFlagBackend

    return HttpFlagBackend.from_config(config, env, clock)


def _unleash(config: UnleashFlagConfig, env: Mapping[str, str], clock: Clock) -> FlagBackend:
    from watchdog.flags.unleash import UnleashFlagBackend

    return UnleashFlagBackend.from_config(config, env, clock)


FLAG_BACKENDS: dict[type[Any], FlagBackendFactory] = {
    FlagdFileFlagConfig: _flagd_file,
    PostgresFlagConfig: _postgres,
    RedisFlagConfig: _redis,
    GcsFlagConfig: _gcs,
    HttpFlagConfig: _http,
    UnleashFlagConfig: _unleash,
}


def build_flag_backend(config: FlagConfig, env: Mapping[str, str], clock: Clock) -> FlagBackend:
    """The backend ``config`` describes, with its secrets from ``env``; FlagError if one is missing."""
    factory = FLAG_BACKENDS.get(type(config))
    if factory is None:
        raise TypeError(f"no flag backend registered for {type(config).__name__}")
    return factory(config, env, clock)
