"""One redactor for everything that may carry a secret on its way to a log, a page or /metrics: HTTP URLs,
database DSNs (URL or libpq ``key=value``), Prometheus base URLs.

Rules (each redacts what the consumer of the string would read as a secret):
- userinfo, as the consumer parses it: for database URLs our DSN parser takes the *last* ``@`` as the end of
  the userinfo (passwords may hold unencoded ``@ / ? #``; an ``@`` in the query must be ``%40``), so the
  redactor does too; for every other scheme the authority ends at the first ``/ ? #`` (as httpx and
  urllib read it) and its last ``@`` ends the userinfo, so ``?email=a@b`` in a query is left alone.
  Database URLs keep the user name (an identity, useful at 3 a.m.) and mask the password (``app:***@``);
  every other scheme masks the whole userinfo (``***@``), since a bare user name there is often a token.
- query parameters whose name looks secret (token, key, pass, secret, auth, signature, sig, credential,
  session) have their value replaced by ``***``.
- libpq ``key=value`` strings: ``password=…`` (quoted or not) is masked.
A string without a scheme but with userinfo (``user:secret@host:9090``) is read as an authority; anything
else (a file path) comes back unchanged.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote, unquote, unquote_plus

MASK = "***"
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
_DB_SCHEMES = frozenset({"postgres", "postgresql"})
_SECRET_PARAM = re.compile(r"token|key|pass|secret|auth|signature|^sig$|credential|session", re.IGNORECASE)
# key=value conninfo: password=secret or password='quoted \' secret'
_KV_ANY = re.compile(r"(?:^|\s)[A-Za-z_]+\s*=")
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s]+)", re.IGNORECASE)


def split_userinfo(scheme: str, rest: str) -> tuple[str, str] | None:
    """(userinfo, remainder) of a URL after its ``scheme://``, or None when it has no userinfo; see the
    module docstring for where the userinfo ends."""
    if scheme.lower() in _DB_SCHEMES:
        at = rest.rfind("@")
    else:
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, end)
    if at < 0:
        return None
    return rest[:at], rest[at + 1 :]


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        if eq and _SECRET_PARAM.search(unquote_plus(name)):
            item = f"{name}={MASK}"
        parts.append(item)
    return "&".join(parts)


@functools.lru_cache(maxsize=1024)
def redact_url(text: str) -> str:
    """``text`` (a URL, a DSN or a libpq ``key=value`` string) safe to show; see the module docstring."""
    m = _URL.match(text)
    if m is None:
        if _KV_ANY.search(text):
            return _KV_PASSWORD.sub(lambda k: k.group("key") + MASK, text)
        # No scheme: "user:secret@host:9090" is still an authority with userinfo; a path is left alone.
        split = split_userinfo("", text)
        return text if split is None else f"{MASK}@{split[1]}"
    scheme, rest = m.group("scheme"), m.group("rest")
    split = split_userinfo(scheme, rest)
    if split is not None:
        userinfo, rest = split
        if scheme.lower() in _DB_SCHEMES:
            user, has_password, _password = userinfo.partition(":")
            rest = f"{user}:{MASK}@{rest}" if has_password else f"{user}@{rest}"
        else:
            rest = f"{MASK}@{rest}"
    head, q, query = rest.partition("?")
    if q:
        query, hashmark, fragment = query.partition("#")
        rest = f"{head}?{_redact_query(query)}{hashmark}{fragment}"
    return f"{scheme}://{rest}"


def secret_spellings(dsn: str) -> set[str]:
    """Every spelling of the password(s) in ``dsn`` (raw, percent-decoded, re-encoded), so that a driver
    error message echoing one of them can be scrubbed."""
    found: list[str] = []
    m = _URL.match(dsn)
    if m is not None:
        rest = m.group("rest")
        split = split_userinfo(m.group("scheme"), rest)
        if split is not None:
            _user, has_password, password = split[0].partition(":")
            if has_password:
                found.append(password)
            rest = split[1]
        _head, _q, query = rest.partition("?")
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            if eq and value and _SECRET_PARAM.search(unquote_plus(name)):
                found.append(value)
    else:
        for k in _KV_PASSWORD.finditer(dsn):
            value = k.group("value")
            if value.startswith("'") and value.endswith("'") and len(value) >= 2:
                found.append(value)
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            found.append(value)
    spellings: set[str] = set()
    for secret in found:
        for s in (secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")):
            if s:
                spellings.add(s)
    return spellings


def scrub(text: str, secrets: set[str]) -> str:
    """``text`` with every given secret spelling masked, longest first (driver errors may quote them)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
