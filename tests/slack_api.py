"""A fake Slack Web API for tests: a Starlette app that speaks ``chat.postMessage`` and ``chat.update`` on
loopback.

``async with FakeSlackApi(token).running() as base_url:`` serves it (``base_url`` ends in ``/api/``, what
slack_sdk's ``base_url`` / ``SLACK_API_URL`` expect). It accepts a form or JSON body, checks
``Authorization: Bearer <token>`` (``not_authed`` without one, ``invalid_auth`` for another token), enforces
the Block Kit limits a page can hit (header 150 chars, section text 3000, field 2000, 10 fields, ``text``
40,000: ``invalid_blocks`` / ``msg_too_long``; buttons need an ``action_id`` and a ``value`` of at most 2,000
chars) and records every request (``requests``), every message it accepted (``posts``, thread replies with
their ``thread_ts``) and every ``chat.update`` (``updates``). A channel name ``#x`` is answered with a
stable channel id (``channel_id("#x")``), as Slack answers with ids.

``fail_next(*modes, channel=None)`` scripts the next answers, one per request (for one channel, or for any):
``"429"`` (with ``Retry-After: retry_after``), ``"500"``, ``"hang"`` (never answers until the server
stops) or any Slack error code (``"invalid_auth"``, ``"channel_not_found"``, ``"fatal_error"``…), answered
as Slack does, HTTP 200 with ``{"ok": false, "error": code}``.

``outage = True`` makes every request answer ``outage_mode`` (``"500"`` unless changed) until it is set back
to False: a Slack outage of any length, without scripting each answer. Scripted answers wait for the outage
to end. Every request and post carries ``at``, the wall-clock time (``time.time()``) it arrived.

``FakeSlackApi(token, rate_limit_per_channel=N)`` (default None: no limit) answers a ``chat.postMessage`` to a
channel that has already accepted N messages within the last second with HTTP 429 and ``Retry-After:
retry_after``, as Slack limits posting to about one message per second per channel; ``chat.update`` is not
limited.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from loopback import serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class SlackRequest:
    method: str
    authorization: str
    body: dict[str, Any]
    answer: str = "ok"
    """ok, 429, 500, hang, or the Slack error code answered."""
    at: float = field(default_factory=time.time)
    """When the request arrived (``time.time()``)."""


@dataclass
class Post:
    channel: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    ts: str = ""
    thread_ts: str = ""
    reply_broadcast: bool = False
    at: float = field(default_factory=time.time)
    """When the message was accepted (``time.time()``)."""


@dataclass
class Update:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def channel_id(channel: str) -> str:
    """The id the fake answers for a channel name (``#ai-oncall`` → ``CAIONCALL``); ids stay as they are."""
    if channel.startswith("C"):
        return channel
    return "C" + "".join(c for c in channel.upper() if c.isalnum())


def _block_problem(blocks: list[dict[str, Any]]) -> str | None:
    for block in blocks:
        kind = block.get("type")
        if kind == "header" and len(block["text"]["text"]) > 150:
            return "header text longer than 150"
        if kind == "section":
            if "text" in block and len(block["text"]["text"]) > 3000:
                return "section text longer than 3000"
            fields = block.get("fields", [])
            if len(fields) > 10 or any(len(f["text"]) > 2000 for f in fields):
                return "section fields over the limits"
            if "text" not in block and not fields:
                return "a section needs text or fields"
        if kind == "actions":
            elements = block.get("elements", [])
            if not elements or len(elements) > 25:
                return "actions need 1 to 25 elements"
            for element in elements:
                if not element.get("action_id") or len(str(element.get("value", ""))) > 2000:
                    return "a button needs an action_id and a value of at most 2000 chars"
    return None


class FakeSlackApi:
    def __init__(
        self,
        token: str = "xoxb-test-token",
        *,
        retry_after: int = 1,
        rate_limit_per_channel: int | None = None,
    ) -> None:
        self.token = token
        self.retry_after = retry_after
        self.requests: list[SlackRequest] = []
        self.posts: list[Post] = []
        self.updates: list[Update] = []
        self._script: dict[str | None, deque[str]] = {}
        self.outage = False
        """While True every request is answered ``outage_mode``; scripted answers wait for it to end."""
        self.outage_mode = "500"
        self.rate_limit_per_channel = rate_limit_per_channel
        """Messages a channel accepts per second before ``chat.postMessage`` answers 429 (None: no limit)."""
        self._accepted: dict[str, deque[float]] = {}
        self._stop = asyncio.Event()
        self._ts = itertools.count(1)
        self.app = Starlette(routes=[Route("/api/{method}", self._handle, methods=["POST"])])

    def fail_next(self, *modes: str, channel: str | None = None) -> None:
        self._script.setdefault(channel, deque()).extend(modes)

    def posts_to(self, channel: str) -> list[Post]:
        """Parent messages (not thread replies) to ``channel``."""
        return [p for p in self.posts if p.channel == channel and not p.thread_ts]

    def replies_to(self, parent: Post) -> list[Post]:
        return [p for p in self.posts if p.thread_ts == parent.ts and p.channel == channel_id(parent.channel)]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with serve_asgi(self.app) as url:
            try:
                yield f"{url}/api/"
            finally:
                self._stop.set()  # release hanging requests so the server can stop

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = (await request.body()).decode()
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(raw or "{}")
            return body if isinstance(body, dict) else {}
        form: dict[str, Any] = dict(parse_qsl(raw))
        if isinstance(form.get("blocks"), str):
            form["blocks"] = json.loads(form["blocks"])
        if isinstance(form.get("reply_broadcast"), str):
            form["reply_broadcast"] = form["reply_broadcast"] in ("1", "true", "True")
        return form

    def _next_mode(self, channel: str) -> str:
        if self.outage:
            return self.outage_mode
        for key in (channel, None):
            queue = self._script.get(key)
            if queue:
                return queue.popleft()
        return "ok"

    async def _handle(self, request: Request) -> Response:
        method = request.path_params["method"]
        body = await self._body(request)
        call = SlackRequest(method, request.headers.get("authorization", ""), body)
        self.requests.append(call)
        if method not in ("chat.postMessage", "chat.update"):
            call.answer = "unknown_method"
            return JSONResponse({"ok": False, "error": "unknown_method"})
        channel = str(body.get("channel", ""))
        call.answer = self._next_mode(channel)
        if call.answer == "hang":
            await self._stop.wait()
            return Response(status_code=504)
        if call.answer == "429":
            return JSONResponse(
                {"ok": False, "error": "ratelimited"},
                status_code=429,
                headers={"Retry-After": str(self.retry_after)},
            )
        if call.answer == "500":
            return Response("upstream exploded", status_code=500, media_type="text/html")
        if call.answer != "ok":
            return JSONResponse({"ok": False, "error": call.answer})
        call.answer = self._check(call.authorization, body)
        if call.answer != "ok":
            return JSONResponse({"ok": False, "error": call.answer})
        blocks = body.get("blocks") or []
        if method == "chat.update":
            ts = str(body.get("ts", ""))
            if not any(p.ts == ts and channel_id(p.channel) == channel for p in self.posts):
                call.answer = "message_not_found"
                return JSONResponse({"ok": False, "error": "message_not_found"})
            self.updates.append(Update(channel, ts, str(body.get("text", "")), blocks))
            return JSONResponse({"ok": True, "channel": channel, "ts": ts, "text": body.get("text", "")})
        ts = f"1700000000.{next(self._ts):06d}"
        thread_ts = str(body.get("thread_ts") or "")
        if thread_ts and not any(p.ts == thread_ts for p in self.posts):
            call.answer = "thread_not_found"
            return JSONResponse({"ok": False, "error": "thread_not_found"})
        if self._over_rate_limit(channel):
            call.answer = "429"
            return JSONResponse(
                {"ok": False, "error": "ratelimited"},
                status_code=429,
                headers={"Retry-After": str(self.retry_after)},
            )
        broadcast = bool(body.get("reply_broadcast"))
        post = Post(channel, str(body.get("text", "")), blocks, ts, thread_ts, broadcast)
        self.posts.append(post)
        return JSONResponse(
            {"ok": True, "channel": channel_id(channel), "ts": ts, "message": {"text": post.text}}
        )

    def _check(self, authorization: str, body: dict[str, Any]) -> str:
        if not authorization.startswith("Bearer "):
            return "not_authed"
        if authorization.removeprefix("Bearer ") != self.token:
            return "invalid_auth"
        channel = str(body.get("channel", ""))
        if not channel.startswith(("#", "C")):
            return "channel_not_found"
        if not body.get("text") and not body.get("blocks"):
            return "no_text"
        if len(str(body.get("text", ""))) > 40_000:
            return "msg_too_long"
        blocks = body.get("blocks") or []
        if not isinstance(blocks, list) or _block_problem(blocks) is not None:
            return "invalid_blocks"
        return "ok"

    def _over_rate_limit(self, channel: str) -> bool:
        """True when ``channel`` (a name or its id) accepted ``rate_limit_per_channel`` messages within the
        last second; otherwise this message counts towards the limit."""
        if self.rate_limit_per_channel is None:
            return False
        now = time.monotonic()
        window = self._accepted.setdefault(channel_id(channel), deque())
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= self.rate_limit_per_channel:
            return True
        window.append(now)
        return False
