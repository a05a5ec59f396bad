"""The Slack buttons over Socket Mode, for deployments without a public URL: the daemon opens an outbound
websocket to Slack (slack_sdk's ``socket_mode.aiohttp.SocketModeClient``) and clicks arrive on it instead of
at ``POST /slack/interactions``. Enabled by ``SLACK_APP_TOKEN`` (an app-level ``xapp-`` token with
``connections:write``); ``SLACK_API_URL`` overrides the API base as for the notifier.

Slack authenticates the socket itself (the app token opened it), so there is no request signature to check.
Each envelope is acknowledged at once (Slack wants that within 3 s), then the click is handled exactly as the
HTTP route handles it (``slack_interactions.click_from_payload`` and ``HANDLERS``). It runs on the daemon's
event loop; slack_sdk reconnects by itself when the socket drops.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from watchdog.incidents.manager import IncidentManager
from watchdog.store.base import StoreUnavailable
from watchdog.web.slack_interactions import HANDLERS, click_from_payload

_log = logging.getLogger(__name__)

APP_TOKEN_ENV = "SLACK_APP_TOKEN"
API_URL_ENV = "SLACK_API_URL"


class SlackSocketMode:
    def __init__(
        self, incidents: IncidentManager, app_token: str, *, api_url: str = "", ping_interval_s: float = 5.0
    ) -> None:
        from slack_sdk.socket_mode.aiohttp import SocketModeClient

        web_client = AsyncWebClient(base_url=api_url) if api_url else AsyncWebClient()
        self._incidents = incidents
        self._client = SocketModeClient(app_token, web_client=web_client, ping_interval=ping_interval_s)
        self._client.socket_mode_request_listeners.append(self._on_request)
        self.handled = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str], incidents: IncidentManager) -> SlackSocketMode | None:
        token = env.get(APP_TOKEN_ENV, "").strip()
        if not token:
            return None
        return cls(incidents, token, api_url=env.get(API_URL_ENV, "").strip())

    async def start(self) -> None:
        """Open the socket; raises what slack_sdk raises when Slack refuses (a bad token...)."""
        connect: Callable[[], Awaitable[None]] = self._client.connect  # slack_sdk leaves it untyped
        await connect()
        _log.info("Slack Socket Mode connected: buttons arrive over the websocket")

    async def stop(self) -> None:
        close: Callable[[], Awaitable[None]] = self._client.close
        await close()

    async def _on_request(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        # Acknowledge first, whatever it is: an envelope not acknowledged is redelivered by Slack.
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type != "interactive":
            return
        try:
            click = click_from_payload(request.payload)
        except ValueError as exc:
            _log.warning("Socket Mode: not a watchdog button click: %s", exc)
            return
        what = f"Slack {click.action_id} on {click.key} by {click.who} (Socket Mode)"
        try:
            result = await HANDLERS[click.action_id](self._incidents, click)
        except StoreUnavailable as exc:
            _log.error("%s failed: state store unavailable: %s", what, exc)
            return
        self.handled += 1
        (_log.info if result.ok else _log.warning)(
            "%s: %s: %s",
            what,
            result.status,
            result.message,
            extra={"incident": click.key, "action": click.action_id, "actor": click.actor},
        )
