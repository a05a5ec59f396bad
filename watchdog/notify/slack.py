"""Pages to Slack: one Block Kit message per page with ``chat.postMessage`` to the target's channel, through
slack_sdk's ``AsyncWebClient`` and its retry handlers (429 honouring ``Retry-After``, 500/503, connection
errors); every request is bounded by ``timeout_s``.

Configuration comes from the environment the registry passes in (``from_env``): ``SLACK_BOT_TOKEN`` (without
it the kind is not built and slack targets go to the fallback channel) and ``SLACK_API_URL`` (the Web API base
URL, default ``https://slack.com/api/``; for proxies and tests).

Mentions (a target's ``mention: [...]``) go into the message text and its first block: ``U…``/``W…`` are
users (``<@U…>``), ``S…`` are user groups (``<!subteam^S…>``), ``here``/``channel``/``everyone`` are the
special mentions (``<!here>``); anything else is shown as plain text and notifies nobody.

A parent page (no ``thread_ref``) is a new message: the header, severity, state, level, since, what breached
(the summary, with its value and threshold), the SLO budget left, the runbook link and, while the incident
is open, **Acknowledge**, **Resolve** and **Silence 1 h** buttons (``action_id`` ``watchdog_ack`` /
``watchdog_resolve`` / ``watchdog_silence_1h``, ``value`` the incident key; ``POST /slack/interactions``
receives them); ``send`` returns ``{"channel": <id>, "ts": <ts>}``. A follow-up (``thread_ref`` set) is a
reply in that thread (broadcast to the channel when it calls people: escalated, reminder), then, with
``update_parent``, ``chat.update`` re-renders the parent with the incident's state now. The update is best
effort: the reply went out, so a failed update is logged, not retried (a retry would repeat the reply).

Errors become ``NotifyError``: ``permanent=True`` for what retrying cannot fix (bad or revoked token, unknown
or archived channel, the app not in the channel, a rejected message, any other 4xx answer but 408/429),
``permanent=False`` for the rest (rate limited after the handler's retries, 5xx, timeouts, refused
connections, unknown ``ok: false`` errors). No message ever contains the token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from watchdog.core.redact import redact_url, scrub
from watchdog.notify.base import NotifyError, Page

_log = logging.getLogger(__name__)

TOKEN_ENV = "SLACK_BOT_TOKEN"
API_URL_ENV = "SLACK_API_URL"
DEFAULT_API_URL = "https://slack.com/api/"

PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "ekm_access_denied",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "restricted_action",
        "restricted_action_read_only_channel",
        "cannot_reply_to_message",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "too_many_attachments",
        "invalid_arguments",
        "invalid_arg_name",
        "invalid_charset",
        "invalid_form_data",
        "invalid_post_type",
        "missing_post_type",
        "method_deprecated",
        "deprecated_endpoint",
        "team_access_not_granted",
    }
)
"""Slack ``error`` codes that retrying cannot fix; every other code is transient."""

# Block Kit limits: header text 150 chars, section text 3000, ``text`` 40,000 (msg_too_long beyond).
_HEADER_MAX = 150
_SECTION_MAX = 3000
_TEXT_MAX = 3000
_STATE_ICON = {"firing": "🔴", "resolved": "✅", "acknowledged": "👀"}
ACK_ACTION = "watchdog_ack"
RESOLVE_ACTION = "watchdog_resolve"
SILENCE_ACTION = "watchdog_silence_1h"
_EVENT_ICON = {
    "escalated": "⏫",
    "repeat": "🔁",
    "acknowledged": "👀",
    "reopened": "🔴",
    "resolved": "✅",
    "muted": "🔇",
    "unmuted": "🔈",
    "refired": "🔴",
    "note": "ℹ️",
}
_SPECIAL_MENTIONS = frozenset({"here", "channel", "everyone"})


def _escape(text: str) -> str:
    """Slack's three control characters; everything else is literal."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mention_markup(ident: str) -> str:
    """``<@U…>`` for users (``U``/``W``), ``<!subteam^S…>`` for user groups, ``<!here>`` for the special
    mentions; anything else is escaped plain text."""
    ident = ident.strip()
    if ident.lstrip("!@").lower() in _SPECIAL_MENTIONS:
        return f"<!{ident.lstrip('!@').lower()}>"
    if ident[:1] in ("U", "W") and ident.isalnum():
        return f"<@{ident}>"
    if ident[:1] == "S" and ident.isalnum():
        return f"<!subteam^{ident}>"
    return _escape(ident)


def _is_http_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def render(page: Page) -> tuple[str, list[dict[str, Any]]]:
    """The ``text`` fallback (notifications, mentions) and the Block Kit blocks of a parent page."""
    icon = _STATE_ICON.get(page.state, "ℹ️")
    mentions = " ".join(mention_markup(m) for m in page.mentions if m.strip()) if page.calls_people else ""
    head = f"{page.state.upper()} [{page.severity}, {page.level}] {page.title}"
    text = f"{mentions} {icon} {_escape(head)}" if mentions else f"{icon} {_escape(head)}"
    if page.summary:
        text = f"{text}: {_escape(page.summary)}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(f"{icon} {page.title}", _HEADER_MAX), "emoji": True},
        }
    ]
    if mentions:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(mentions, _SECTION_MAX)}})
    state = page.state
    if page.state == "acknowledged" and page.acked_by:
        state = f"acknowledged by {_who(page.acked_by)}"
    fields = [
        f"*Severity*\n{_escape(page.severity)}",
        f"*State*\n{state if state != page.state else _escape(page.state)}",
        f"*Level*\n{_escape(page.level)}",
    ]
    if page.since:
        fields.append(f"*Since*\n{_escape(page.since)}")
    if page.budget_left:
        fields.append(f"*SLO budget left*\n{_escape(page.budget_left)}")
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _clip(f, 2000)} for f in fields]})
    if page.summary:
        summary = _clip(_escape(page.summary), _SECTION_MAX)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": summary}})
    if page.muted:
        muted = "*Muted (explained by this incident):* " + ", ".join(_escape(m) for m in page.muted)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(muted, _SECTION_MAX)}})
    if page.labels:
        labels = ", ".join(f"`{_escape(k)}={_escape(v)}`" for k, v in sorted(page.labels.items()))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(labels, 2000)}]})
    links = [_link(text, url) for text, url in page.links if _is_http_url(url)]
    if page.runbook_url:
        if _is_http_url(page.runbook_url):
            links.insert(0, "*Runbook:* " + _link(page.title, page.runbook_url))
        else:
            links.insert(0, f"*Runbook:* `{_escape(page.runbook_url)}`")
    if links:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip("  ".join(links), _SECTION_MAX)}}
        )
    if page.actions and page.state != "resolved" and len(page.key) <= 2000:
        blocks.append(_buttons(page))
    return _clip(text, _TEXT_MAX), blocks


def render_follow_up(page: Page) -> tuple[str, list[dict[str, Any]]]:
    """A reply in the incident's thread: what happened (``note``), who did it, and the mentions when it
    calls people."""
    icon = _EVENT_ICON.get(page.event, "ℹ️")
    mentions = " ".join(mention_markup(m) for m in page.mentions if m.strip()) if page.calls_people else ""
    note = _escape(page.note or page.event)
    if page.actor:
        # The actor as a mention where the note names them ("acknowledged by <@U…>"), else after it.
        actor = _escape(page.actor)
        note = note.replace(actor, _who(page.actor)) if actor in note else f"{note} ({_who(page.actor)})"
    line = f"{icon} *{_escape(page.title)}* {note}"
    if page.event == "refired" and page.summary:
        line += f"\n{_escape(page.summary)}"
    if mentions:
        line = f"{mentions} {line}"
    return _clip(line, _TEXT_MAX), [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(line, _SECTION_MAX)}}
    ]


def _who(actor: str) -> str:
    """A Slack user id as a mention (``slack:U123`` → ``<@U123>``), anything else as text."""
    ident = actor.removeprefix("slack:")
    if ident[:1] in ("U", "W") and ident.isalnum():
        return f"<@{ident}>"
    return _escape(actor)


def _link(text: str, url: str) -> str:
    # In a link the URL may not hold ``|`` or ``>``; escape them as Slack does.
    return f"<{_escape(url).replace('|', '%7C')}|{_escape(text)}>"


def _buttons(page: Page) -> dict[str, Any]:
    elements: list[dict[str, Any]] = []
    if page.state != "acknowledged":
        elements.append(_button("Acknowledge", ACK_ACTION, page.key, "primary"))
    elements.append(_button("Resolve", RESOLVE_ACTION, page.key, None))
    elements.append(_button("Silence 1 h", SILENCE_ACTION, page.key, "danger"))
    return {"type": "actions", "block_id": "watchdog_incident", "elements": elements}


def _button(label: str, action_id: str, value: str, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


class SlackNotifier:
    """Implements the Notifier protocol for ``type: slack`` targets."""

    name = "slack"

    def __init__(
        self,
        token: str,
        *,
        api_url: str = DEFAULT_API_URL,
        timeout_s: int = 10,
        rate_limit_retries: int = 2,
        server_error_retries: int = 2,
    ) -> None:
        if not token.strip():
            raise ValueError(f"{TOKEN_ENV} is empty")
        self._token = token.strip()
        self._api_url = api_url
        self._client = AsyncWebClient(
            token=self._token,
            base_url=api_url,
            timeout=timeout_s,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=1),
                AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
                AsyncServerErrorRetryHandler(max_retry_count=server_error_retries),
            ],
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlackNotifier | None:
        """The notifier ``env`` configures, or None without ``SLACK_BOT_TOKEN``."""
        token = env.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        return cls(token, api_url=env.get(API_URL_ENV, "").strip() or DEFAULT_API_URL)

    def _safe(self, text: str) -> str:
        """``text`` without the token, and with the API URL's userinfo/secret parameters masked."""
        text = scrub(text, {self._token})
        return text.replace(self._api_url, redact_url(self._api_url)) if self._api_url else text

    async def send(self, page: Page) -> Mapping[str, str] | None:
        if not page.channel:
            raise NotifyError("slack: the target has no channel", permanent=True)
        ref = page.thread_ref
        if ref is not None and ref.get("channel") and ref.get("ts"):
            reply_text, reply_blocks = render_follow_up(page)
            await self._call(
                f"slack: reply in {ref['channel']} thread {ref['ts']}",
                self._client.chat_postMessage,
                channel=ref["channel"],
                thread_ts=ref["ts"],
                reply_broadcast=page.calls_people,
                text=reply_text,
                blocks=reply_blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
            if page.update_parent:
                text, blocks = render(page)
                try:
                    await self._call(
                        f"slack: chat.update of {ref['channel']} {ref['ts']}",
                        self._client.chat_update,
                        channel=ref["channel"],
                        ts=ref["ts"],
                        text=text,
                        blocks=blocks,
                    )
                except NotifyError as exc:
                    _log.warning("the page's parent message was not updated: %s", exc)
            return None
        text, blocks = render(page)
        data = await self._call(
            f"slack: chat.postMessage to {page.channel}",
            self._client.chat_postMessage,
            channel=page.channel,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        channel, ts = data.get("channel"), data.get("ts")
        return {"channel": str(channel), "ts": str(ts)} if channel and ts else None

    async def _call(self, where: str, method: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await method(**kwargs)
        except SlackApiError as exc:
            raise self._api_error(where, exc) from None
        except TimeoutError:
            raise NotifyError(f"{where}: timed out", permanent=False) from None
        except (aiohttp.ClientError, OSError, SlackClientError) as exc:
            detail = self._safe(f"{type(exc).__name__}: {exc}")
            raise NotifyError(f"{where}: {detail}", permanent=False) from None
        data = response.data
        return data if isinstance(data, dict) else {}

    def _api_error(self, where: str, exc: SlackApiError) -> NotifyError:
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        code = str(data.get("error", "")) if isinstance(data, dict) else ""
        if status == 429:
            retry_after = response.headers.get("Retry-After", "?") if response.headers else "?"
            return NotifyError(
                f"{where}: rate limited (HTTP 429, Retry-After {retry_after}) after retries", permanent=False
            )
        if status >= 500:
            return NotifyError(f"{where}: HTTP {status} {self._safe(code)}".rstrip(), permanent=False)
        if code:
            permanent = code in PERMANENT_ERRORS
            return NotifyError(f"{where}: {self._safe(code)} (HTTP {status})", permanent=permanent)
        client_error = 400 <= status < 500 and status not in (408, 429)
        return NotifyError(f"{where}: HTTP {status} without a Slack error code", permanent=client_error)
