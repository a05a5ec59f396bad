"""``POST /slack/interactions``: the **Acknowledge**, **Resolve** and **Silence 1 h** buttons on a page.

Slack signs every request: ``X-Slack-Signature`` is ``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``
with the app's signing secret, ``X-Slack-Request-Timestamp`` the timestamp. slack_sdk's
``SignatureVerifier`` checks both and refuses a timestamp more than 5 minutes off, so a captured request
cannot be replayed later. The secret comes from ``SLACK_SIGNING_SECRET``; without it the route answers 503
(nobody can press the buttons) rather than accept unsigned clicks.

A click is a form field ``payload`` holding JSON of ``type: block_actions``; ``actions[0].action_id`` says
which button (``watchdog_ack`` / ``watchdog_resolve`` / ``watchdog_silence_1h``, see ``notify.slack``) and
its ``value`` which incident. The actor is ``slack:<user id>`` (rendered as a mention in the thread); the
user name, when Slack sends one, goes to the log line.

Slack wants an answer within 3 s, or it shows the person who clicked an error. The action gets
``ACTION_DEADLINE_S`` on the daemon's loop and the answer is 200 either way: an action that misses the
deadline still completes (``web.actions``). Slack does not show the body of an answer to a block action, so
the visible confirmation is the note the incident manager posts in the incident's thread ("acknowledged by
@ana"); the body (``text``, ``status``) is for logs and tests.

Answers: 200 for every signed, well-formed click, including an unknown incident, a double click and an
acknowledgement of a resolved incident (answers, not errors; nothing changes); 400 for a malformed payload;
401 for a missing, wrong or stale signature; 413 for a body over 64 KiB; 503 without a signing secret or when
the state store fails (so Slack marks the click as failed and the person tries again or uses the CLI).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import Clock as SlackClock
from slack_sdk.signature import SignatureVerifier
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from watchdog.core.clock import Clock, SystemClock
from watchdog.incidents.manager import ActionResult, IncidentManager
from watchdog.notify.slack import ACK_ACTION, RESOLVE_ACTION, SILENCE_ACTION
from watchdog.store.base import StoreUnavailable
from watchdog.web.actions import HomeRunner, IncidentActions, IncidentsView, RequestRefused, read_body

_log = logging.getLogger(__name__)

PATH = "/slack/interactions"
SIGNING_SECRET_ENV = "SLACK_SIGNING_SECRET"
ACTION_DEADLINE_S = 2.5
"""Slack's limit is 3 s for the whole round trip; this leaves half a second for the network."""
SILENCE_BUTTON_S = 3600.0
MAX_FORM_FIELDS = 20
MAX_ID_CHARS = 64
MAX_KEY_CHARS = 2000
"""Slack's limit for a button's value, which holds the incident key."""


class _VerifierClock(SlackClock):
    """Our clock in the shape SignatureVerifier takes, so tests can fix "now"."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now()


class Click:
    """One button press, validated."""

    def __init__(self, action_id: str, key: str, user_id: str, user_name: str) -> None:
        self.action_id = action_id
        self.key = key
        self.user_id = user_id
        self.user_name = user_name

    @property
    def actor(self) -> str:
        return f"slack:{self.user_id}"

    @property
    def who(self) -> str:
        return f"{self.actor} ({self.user_name})" if self.user_name else self.actor


def slack_interaction_routes(
    daemon: IncidentsView,
    home: HomeRunner,
    env: Mapping[str, str],
    *,
    clock: Clock | None = None,
    deadline_s: float = ACTION_DEADLINE_S,
) -> list[Route]:
    """The route for Slack's interactivity Request URL. ``env`` holds ``SLACK_SIGNING_SECRET``; ``clock``
    is "now" for the 5-minute replay window (default: the system clock)."""
    secret = env.get(SIGNING_SECRET_ENV, "").strip()
    verifier = SignatureVerifier(secret, clock=_VerifierClock(clock or SystemClock())) if secret else None
    actions = IncidentActions(daemon, home)

    async def interactions(request: Request) -> Response:
        if verifier is None:
            return PlainTextResponse(
                f"Slack interactions are not configured: set {SIGNING_SECRET_ENV} (the app's signing "
                "secret) for the watchdog\n",
                status_code=503,
            )
        try:
            body = await read_body(request)
        except RequestRefused as refused:
            return PlainTextResponse(refused.message + "\n", status_code=refused.status)
        try:
            text = body.decode("utf-8")  # Slack sends UTF-8; the verifier could not check anything else
        except UnicodeDecodeError:
            return PlainTextResponse("not a watchdog button click: the body is not UTF-8\n", status_code=400)
        if not _signed(verifier, text, request.headers):
            _log.warning(
                "Slack interaction refused: missing, wrong or stale signature",
                extra={"client": request.client.host if request.client else ""},
            )
            return PlainTextResponse("invalid or expired Slack signature\n", status_code=401)
        try:
            click = _parse_click(text)
        except ValueError as exc:
            return PlainTextResponse(f"not a watchdog button click: {exc}\n", status_code=400)
        return await _act(actions, click, deadline_s)

    return [Route(PATH, interactions, methods=["POST"])]


def _signed(verifier: SignatureVerifier, body: str, headers: Mapping[str, str]) -> bool:
    try:
        return verifier.is_valid(
            body=body,
            timestamp=headers.get("x-slack-request-timestamp"),
            signature=headers.get("x-slack-signature"),
        )
    except ValueError:  # a timestamp that is not a number
        return False


def _parse_click(body: str) -> Click:
    """ValueError, with what is wrong, for anything but a click on one of our buttons."""
    form = parse_qs(body, max_num_fields=MAX_FORM_FIELDS)
    fields = form.get("payload", [])
    if len(fields) != 1:
        raise ValueError("expected one form field 'payload'")
    try:
        payload = json.loads(fields[0])
    except ValueError:
        raise ValueError("'payload' is not JSON") from None
    return click_from_payload(payload)


def click_from_payload(payload: Any) -> Click:
    """The click a ``block_actions`` payload describes (from the HTTP route or Socket Mode); ValueError
    saying what is wrong otherwise."""
    if not isinstance(payload, dict):
        raise ValueError("'payload' is not a JSON object")
    if payload.get("type") != "block_actions":
        raise ValueError(f"payload type {payload.get('type')!r}, expected 'block_actions'")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise ValueError("no actions in the payload")
    action = actions[0]
    action_id = action.get("action_id")
    if action_id not in HANDLERS:
        raise ValueError(f"unknown action_id {action_id!r}")
    key = action.get("value")
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise ValueError("the button's value is not an incident key")
    user = payload.get("user")
    user = user if isinstance(user, dict) else {}
    user_id = user.get("id")
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_ID_CHARS:
        raise ValueError("no user id in the payload")
    name = user.get("username") or user.get("name") or ""
    return Click(str(action_id), key, user_id, str(name)[:MAX_ID_CHARS])


def _acknowledge(manager: IncidentManager, click: Click) -> Awaitable[ActionResult]:
    return manager.acknowledge(click.key, click.actor)


def _resolve(manager: IncidentManager, click: Click) -> Awaitable[ActionResult]:
    return manager.resolve(click.key, click.actor)


def _silence(manager: IncidentManager, click: Click) -> Awaitable[ActionResult]:
    return manager.silence_incident(
        click.key, SILENCE_BUTTON_S, click.actor, f"Silence 1 h button in Slack, by {click.who}"
    )


HANDLERS: dict[str, Callable[[IncidentManager, Click], Awaitable[ActionResult]]] = {
    ACK_ACTION: _acknowledge,
    RESOLVE_ACTION: _resolve,
    SILENCE_ACTION: _silence,
}


async def _act(actions: IncidentActions, click: Click, deadline_s: float) -> Response:
    handler = HANDLERS[click.action_id]
    what = f"Slack {click.action_id} on {click.key} by {click.who}"
    try:
        result = await actions.run(lambda manager: handler(manager, click), deadline_s, what)
    except TimeoutError:
        _log.warning("%s: no answer within %g s; it goes on in the background", what, deadline_s)
        return _answer("working on it; the incident's thread will confirm", "pending")
    except StoreUnavailable as exc:
        _log.error("%s failed: state store unavailable: %s", what, exc)
        return _answer("the watchdog's state store is unavailable; try again", "error", 503)
    log = _log.info if result.ok else _log.warning
    log(
        "%s: %s: %s",
        what,
        result.status,
        result.message,
        extra={
            "incident": click.key,
            "action": click.action_id,
            "actor": click.actor,
            "slack_user": click.user_name,
            "status": result.status,
        },
    )
    return _answer(result.message, result.status)


def _answer(text: str, status: str, http_status: int = 200) -> Response:
    body: dict[str, Any] = {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": text,
        "status": status,
    }
    return JSONResponse(body, status_code=http_status)
