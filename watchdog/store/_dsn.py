"""Password-free rendering of connection strings, for logs and error messages."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

_MASK = "***"
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>.*)$", re.DOTALL)
# key=value conninfo: password=secret or password='quoted \' secret'
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s]+)", re.IGNORECASE)
# URL query parameter: ?password=secret&...
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&]password=)(?P<value>[^&#]*)", re.IGNORECASE)


def _split_userinfo(rest: str) -> tuple[str, str] | None:
    """(userinfo, remainder) of a URL without its scheme, or None when there is no userinfo.

    The last "@" ends the userinfo, so an unencoded "@" inside a password still ends up masked. An "@" that
    only occurs in the query string (after a "?") is not userinfo.
    """
    at = rest.rfind("@")
    if at < 0:
        return None
    query = rest.find("?")
    if 0 <= query < at:
        # "@" after the "?" belongs to the query unless an earlier one exists before it.
        at = rest.rfind("@", 0, query)
        if at < 0:
            return None
    return rest[:at], rest[at + 1 :]


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``; user, host, port and database stay visible.

    Handles ``postgresql://user:pass@host/db?password=...`` URLs (encoded or not) and libpq
    ``key=value`` strings. Anything else (a file path) is returned unchanged.
    """
    m = _URL.match(dsn)
    if m is None:
        return _KV_PASSWORD.sub(lambda k: k.group("key") + _MASK, dsn)
    scheme, rest = m.group("scheme"), m.group("rest")
    split = _split_userinfo(rest)
    if split is not None:
        userinfo, remainder = split
        user, sep, _password = userinfo.partition(":")
        rest = f"{user}:{_MASK}@{remainder}" if sep else f"{user}@{remainder}"
    return scheme + _QUERY_PASSWORD.sub(lambda k: k.group("key") + _MASK, rest)


def dsn_secrets(dsn: str) -> set[str]:
    """Every spelling of the password(s) in ``dsn`` (raw, percent-decoded, re-encoded), so that a driver
    error message echoing one of them can be scrubbed."""
    found: list[str] = []
    m = _URL.match(dsn)
    if m is not None:
        split = _split_userinfo(m.group("rest"))
        if split is not None:
            _user, sep, password = split[0].partition(":")
            if sep:
                found.append(password)
        found.extend(q.group("value") for q in _QUERY_PASSWORD.finditer(m.group("rest")))
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


def scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN's password(s) masked, for driver errors that might quote the DSN."""
    for secret in sorted(dsn_secrets(dsn), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text
