"""Demo accounts and session tokens of the reference service.

Accounts live in code, not in the database: login is not part of the content migration, so DB faults
leave it alone and a login journey keeps working while the DB path is broken. The passwords are public
demo credentials, hence plain text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DemoUser:
    email: str
    password: str
    name: str
    role: str
    email_verified: bool

    @property
    def id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{self.email}"))

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "name": self.name, "role": self.role}


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("demo@example.com", "demo1234", "Demo Student", "student", email_verified=True),
    DemoUser("teacher@example.com", "teacher1234", "Demo Teacher", "teacher", email_verified=True),
    DemoUser("unverified@example.com", "demo1234", "Unverified Student", "student", email_verified=False),
)

SESSION_COOKIE = "sessionToken"
SESSION_SECONDS = 24 * 3600
REMEMBER_ME_SECONDS = 30 * 24 * 3600


class SessionSigner:
    """Stateless signed tokens: ``base64url(json payload) + "." + hex HMAC-SHA256``.

    Nothing to store per session, so a benchmark that logs in millions of times costs no memory."""

    def __init__(self, secret: bytes, users: tuple[DemoUser, ...] = DEMO_USERS) -> None:
        self._secret = secret
        self._users = {user.id: user for user in users}
        self._by_email = {user.email.lower(): user for user in users}

    def authenticate(self, email: str, password: str) -> DemoUser | None:
        user = self._by_email.get(email.strip().lower())
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            return None
        return user

    def issue(self, user: DemoUser, lifetime: int) -> str:
        payload = {"uid": user.id, "email": user.email, "exp": int(time.time()) + lifetime}
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str | None) -> DemoUser | None:
        if not token or "." not in token:
            return None
        body, signature = token.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            payload: Any = json.loads(base64.urlsafe_b64decode(body.encode()))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(payload, Mapping) or not isinstance(payload.get("exp"), int):
            return None
        if payload["exp"] < time.time():
            return None
        return self._users.get(str(payload.get("uid")))

    def _sign(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()
