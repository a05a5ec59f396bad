"""Run the daemon with its HTTP face until SIGTERM/SIGINT: ``watchdog run`` and ``watchdog demo`` use it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
from collections.abc import Mapping

from watchdog.config.loader import WatchdogConfig
from watchdog.runtime.daemon import Daemon
from watchdog.runtime.wiring import wire
from watchdog.store.base import StoreUnavailable
from watchdog.web.app import create_app
from watchdog.web.server import HttpServer
from watchdog.web.slack_socket import SlackSocketMode

_log = logging.getLogger(__name__)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit: probes, the store and the HTTP server share the
    process's descriptors, and a low soft limit (1024 is common) is the first thing a flood exhausts.
    Returns (soft, hard) as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            _log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


async def serve_daemon(
    config: WatchdogConfig,
    listen: str,
    state: str,
    stop: asyncio.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); drain and return the exit status. ``env`` configures
    the notifiers, the Slack buttons and the incident API (``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``,
    ``WATCHDOG_API_TOKEN``...); default: the process environment."""
    stop = stop or asyncio.Event()
    soft, _hard = raise_open_files_limit()
    _log.info("open-files limit %d", soft, extra={"nofile": soft})
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            components = wire(config, state=state, env=env)
        except ValueError as exc:
            _log.error("bad state store: %s", exc)
            return 2
        daemon = Daemon(components)
        # Listen first: a busy or foreign address fails before any probe runs or the store is touched.
        # Until the daemon has started, /readyz says 503.
        server = HttpServer(create_app(daemon, env=env, intakes=config.intake), listen)
        try:
            url = await server.start()
        except OSError as exc:
            _log.error("%s", exc)
            await components.close_probes()
            return 1
        try:
            await daemon.start()
        except StoreUnavailable as exc:
            _log.error("cannot open the state store: %s", exc)
            await server.stop()
            await components.close_probes()
            return 1
        _log.info("serving /metrics, /healthz, /readyz on %s", url, extra={"url": url})
        # Everything built so far lives as long as the process: out of the collector's sight, a full
        # collection no longer walks it (it put 1,000-incident ticks over 50 ms; BENCHMARKS.md).
        gc.freeze()
        socket_mode = SlackSocketMode.from_env(os.environ if env is None else env, daemon.incidents)
        if socket_mode is not None:
            try:
                await socket_mode.start()
            except Exception as exc:  # the buttons are lost, not the daemon: say so and go on
                _log.error("Slack Socket Mode did not connect (%s); buttons will not work", exc)
                socket_mode = None
        await stop.wait()
        _log.info("shutting down")
        if socket_mode is not None:
            await socket_mode.stop()
        await server.stop()
        await daemon.stop()
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
