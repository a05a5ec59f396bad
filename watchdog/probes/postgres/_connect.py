"""Where and how to connect: DSN/environment parsing, redaction, and the one reused connection.

DSNs are parsed here (not by the driver) so that passwords with ``@ : / # ? %`` and Cloud SQL socket
directories (``/cloudsql/PROJECT:REGION:INSTANCE``, which contain colons) work whether or not they are
percent-encoded, and so that every message can be scrubbed of the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import asyncpg

from watchdog.core.redact import MASK as _MASK
from watchdog.core.redact import scrub

_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_KNOWN_PARAMS = {
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
}


class DsnError(ValueError):
    """The connection settings cannot be understood (message is free of secrets)."""


@dataclass(frozen=True)
class ConnectTarget:
    host: str
    """Host name, IP address, or (starting with ``/``) the directory holding the Unix socket."""
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None

    @property
    def is_socket(self) -> bool:
        return self.host.startswith("/")

    @property
    def socket_path(self) -> str:
        return f"{self.host.rstrip('/')}/.s.PGSQL.{self.port}"

    @property
    def address(self) -> str:
        if self.is_socket:
            return self.socket_path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def display(self) -> str:
        """A DSN safe to show: never the password (``***`` marks that one is set)."""
        auth = quote(self.user, safe="") + (f":{_MASK}" if self.password else "")
        params: list[str] = []
        if self.is_socket:
            hostpart = ""
            params.append(f"host={self.host}")
            if self.port != 5432:
                params.append(f"port={self.port}")
        else:
            hostpart = self.address
        if self.sslmode:
            params.append(f"sslmode={self.sslmode}")
        query = ("?" + "&".join(params)) if params else ""
        return f"postgresql://{auth}@{hostpart}/{quote(self.database, safe='')}{query}"

    def secrets(self) -> set[str]:
        if not self.password:
            return set()
        p = self.password
        return {s for s in (p, quote(p, safe=""), quote(p), p.replace("'", "\\'")) if s}

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets())

    def with_overrides(self, *, sslmode: str | None = None, password: str | None = None) -> ConnectTarget:
        return ConnectTarget(
            host=self.host,
            port=self.port,
            database=self.database,
            user=self.user,
            password=password if password is not None else self.password,
            sslmode=sslmode or self.sslmode,
            sslrootcert=self.sslrootcert,
            sslcert=self.sslcert,
            sslkey=self.sslkey,
        )


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """(userinfo, remainder). The LAST ``@`` ends the userinfo, so passwords may contain unencoded
    ``@ : / ? # & =``; an ``@`` inside query parameters must then be written ``%40``."""
    at = rest.rfind("@")
    if at < 0:
        return None, rest
    return rest[:at], rest[at + 1 :]


def _parse_url(dsn: str) -> dict[str, str]:
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme.lower() not in {"postgres", "postgresql"}:
        raise DsnError("a DSN URL starts with postgresql:// (or postgres://)")
    out: dict[str, str] = {}
    userinfo, rest = _split_userinfo(rest)
    if userinfo is not None:
        user, has_password, password = userinfo.partition(":")
        if user:
            out["user"] = unquote(user)
        if has_password:
            out["password"] = unquote(password)
    # What follows the userinfo: host[:port][/dbname][?params]; a password may have held "/" or "?", but
    # once it is removed the first "/" or "?" ends the authority.
    cut = len(rest)
    for ch in "/?":
        idx = rest.find(ch)
        if 0 <= idx < cut:
            cut = idx
    authority, tail = rest[:cut], rest[cut:]
    path, _, query = tail.partition("?")
    if path.startswith("/") and path[1:]:
        out["dbname"] = unquote(path[1:])
    if authority:
        if "," in authority:
            raise DsnError("several hosts in one DSN are not supported; give one host per probe")
        if authority.startswith("["):
            host, _, after = authority[1:].partition("]")
            port = after[1:] if after.startswith(":") else ""
        elif authority.count(":") == 1:
            host, _, port = authority.partition(":")
        else:
            host, port = authority, ""
        if host:
            out["host"] = unquote(host)
        if port:
            out["port"] = port
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _KNOWN_PARAMS:
            out["host" if key == "hostaddr" and "host" not in out else key] = value
    return out


def _parse_keyvalue(dsn: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i, n = 0, len(dsn)
    while i < n:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            break
        start = i
        while i < n and dsn[i] not in "= \t\n":
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            raise DsnError(f"expected key=value in the connection string near {key!r}")
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value_chars: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while i < n and dsn[i] != "'":
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1
                value_chars.append(dsn[i])
                i += 1
            if i >= n:
                raise DsnError(f"unterminated quoted value for {key!r}")
            i += 1
        else:
            while i < n and not dsn[i].isspace():
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1
                value_chars.append(dsn[i])
                i += 1
        if key in _KNOWN_PARAMS:
            out[key] = "".join(value_chars)
    return out


def _target(fields: Mapping[str, str], *, default_password: str | None = None) -> ConnectTarget:
    host = fields.get("host") or ""
    if not host:
        raise DsnError("no host: give host (or host=/path/to/socket/dir) in the DSN or DB_HOST")
    if "," in host:
        raise DsnError("several hosts in one DSN are not supported; give one host per probe")
    try:
        port = int(fields.get("port") or 5432)
    except ValueError:
        raise DsnError(f"port {fields.get('port')!r} is not a number") from None
    if not 0 < port < 65536:
        raise DsnError(f"port {port} is out of range")
    sslmode = fields.get("sslmode") or None
    if sslmode is not None and sslmode not in _SSL_MODES:
        raise DsnError(f"sslmode {sslmode!r} is not one of {', '.join(_SSL_MODES)}")
    user = fields.get("user") or "postgres"
    password = fields.get("password")
    if password is None or password == "":
        password = default_password or None
    return ConnectTarget(
        host=host,
        port=port,
        database=fields.get("dbname") or user,
        user=user,
        password=password,
        sslmode=sslmode,
        sslrootcert=fields.get("sslrootcert") or None,
        sslcert=fields.get("sslcert") or None,
        sslkey=fields.get("sslkey") or None,
    )


def parse_dsn(dsn: str, *, default_password: str | None = None) -> ConnectTarget:
    """A ``postgresql://`` URL or a libpq ``key=value`` string → target. Errors never quote the DSN."""
    text = dsn.strip()
    if not text:
        raise DsnError("the DSN is empty")
    fields = _parse_url(text) if "://" in text.split("=", 1)[0] else _parse_keyvalue(text)
    return _target(fields, default_password=default_password)


def target_from_env(env: Mapping[str, str], prefix: str = "DB_") -> ConnectTarget:
    """``DB_HOST`` (a path such as ``/cloudsql/PROJECT:REGION:INSTANCE`` means the Unix socket), ``DB_PORT``,
    ``DB_NAME``, ``DB_USER``, ``DB_PASSWORD``, ``DB_SSLMODE``."""
    host = env.get(f"{prefix}HOST", "")
    if not host:
        raise DsnError(f"no DSN configured and {prefix}HOST is not set")
    fields = {
        "host": host,
        "port": env.get(f"{prefix}PORT", ""),
        "dbname": env.get(f"{prefix}NAME", ""),
        "user": env.get(f"{prefix}USER", ""),
        "password": env.get(f"{prefix}PASSWORD", ""),
        "sslmode": env.get(f"{prefix}SSLMODE", ""),
    }
    return _target(fields)


def resolve_target(
    *,
    dsn: str | None,
    dsn_env: str | None,
    env_prefix: str,
    sslmode: str | None,
    env: Mapping[str, str] | None = None,
) -> ConnectTarget:
    environ = os.environ if env is None else env
    default_password = environ.get(f"{env_prefix}PASSWORD") or None
    if dsn_env is not None:
        value = environ.get(dsn_env, "")
        if not value:
            raise DsnError(f"environment variable {dsn_env} (the DSN) is not set")
        target = parse_dsn(value, default_password=default_password)
    elif dsn is not None:
        target = parse_dsn(dsn, default_password=default_password)
    else:
        target = target_from_env(environ, env_prefix)
    return target.with_overrides(sslmode=sslmode) if sslmode else target


def ssl_argument(target: ConnectTarget) -> Any:
    """asyncpg's ``ssl=`` for the target: False on sockets, a mode string, or an SSLContext with certs."""
    mode = target.sslmode or "prefer"
    if target.is_socket or mode == "disable":
        return False
    needs_context = target.sslrootcert or target.sslcert
    if not needs_context or mode in {"allow", "prefer"}:
        return mode
    ctx = ssl.create_default_context(cafile=target.sslrootcert)
    if mode != "verify-full":
        ctx.check_hostname = False
    if mode == "require" and not target.sslrootcert:
        ctx.verify_mode = ssl.CERT_NONE
    if target.sslcert:
        ctx.load_cert_chain(target.sslcert, target.sslkey)
    return ctx


# ------------------------------------------------------------------------------------------------
# Errors → reasons an engineer can act on.


def describe_error(exc: BaseException, target: ConnectTarget, *, timeout_s: float | None = None) -> str:
    return target.scrub(_describe(exc, target, timeout_s))


def _server_message(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return " ".join(str(msg).split())


def _describe(exc: BaseException, target: ConnectTarget, timeout_s: float | None) -> str:
    where = target.address
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return f"authentication failed for user {target.user!r} at {where}: wrong password" + (
            "" if target.password else " (none was given)"
        )
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return (
            f"connection slots exhausted at {where}: the server refused a new connection "
            f"({_server_message(exc)}); max_connections is reached"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"database {target.database!r} does not exist at {where}"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"not allowed to connect as {target.user!r} at {where}: {_server_message(exc)}"
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return f"database at {where} is not accepting connections: {_server_message(exc)}"
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return f"permission denied for role {target.user!r}: {_server_message(exc)}"
    if isinstance(exc, asyncpg.QueryCanceledError):
        return (
            f"statement cancelled by statement_timeout ({_server_message(exc)}): the database is slow or busy"
        )
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return f"gave up waiting for a lock (lock_timeout): {_server_message(exc)}"
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        if isinstance(exc, asyncpg.ConnectionDoesNotExistError) or state.startswith("08"):
            return f"connection to {where} lost: {_server_message(exc)}"
        if state in {"57P01", "57P02"}:
            return f"database at {where} shut the session down: {_server_message(exc)}"
        return f"server error {state}: {_server_message(exc)}".replace("  ", " ")
    if isinstance(exc, TimeoutError):
        bound = f" within {timeout_s:g}s" if timeout_s is not None else ""
        return f"no answer from {where}{bound} (database hung, overloaded, or network path blocked)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {target.host!r}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError) and target.is_socket:
        return (
            f"Unix socket {target.socket_path} does not exist (is the Cloud SQL volume/proxy mounted, "
            "and is the instance connection name PROJECT:REGION:INSTANCE right?)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {where} (server down or not listening there)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure with {where}: {exc.reason or exc}"
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError | asyncpg.InterfaceError):
        return f"connection to {where} lost: {_server_message(exc)}"
    if isinstance(exc, ConnectionError):
        return f"connection to {where} lost: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {_server_message(exc)}"


def _socket_exists(path: str) -> bool:
    return os.path.exists(path)


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def is_connection_error(exc: BaseException) -> bool:
    """After this error the connection is unusable and must be replaced."""
    if isinstance(exc, asyncpg.PostgresError):
        # Administrator shutdown, crash recovery and the like end the session.
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith("57P") or state.startswith("08")
    return isinstance(
        exc, asyncpg.InterfaceError | OSError | TimeoutError | asyncpg.ConnectionDoesNotExistError
    )


# ------------------------------------------------------------------------------------------------
# The one connection per monitored target.


@dataclass(frozen=True)
class SessionInfo:
    user: str
    superuser: bool
    read_all_stats: bool
    """Member of pg_read_all_stats (pg_monitor includes it): sees other roles' sessions and statements."""
    monitor: bool
    server_version_num: int
    database: str
    pid: int


_SESSION_INFO = """
SELECT current_user::text, r.rolsuper,
       r.rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       r.rolsuper OR pg_has_role(current_user, 'pg_monitor', 'USAGE'),
       current_setting('server_version_num')::int, current_database()::text, pg_backend_pid()
FROM pg_roles r WHERE r.rolname = current_user
"""


class MonitoredConnection:
    """At most one connection to the target, opened on demand and reused across runs.

    ``lock`` serialises runs: a caller that finds it held must not wait (see ``PostgresProbe.run``). Every
    session is created with ``application_name``, ``statement_timeout``, ``lock_timeout``,
    ``idle_in_transaction_session_timeout`` and read-only transactions, so a check can neither hang the
    server side nor change data.
    """

    def __init__(
        self,
        target: ConnectTarget,
        *,
        application_name: str,
        connect_timeout_s: float,
        statement_timeout_s: float,
        lock_timeout_s: float,
    ) -> None:
        self.target = target
        self.application_name = application_name
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self.lock_timeout_s = min(lock_timeout_s, statement_timeout_s)
        self.lock = asyncio.Lock()
        self.connection: Any = None
        self.session: SessionInfo | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.is_closed()

    def server_settings(self) -> dict[str, str]:
        return {
            "application_name": self.application_name,
            "statement_timeout": _ms(self.statement_timeout_s),
            "lock_timeout": _ms(self.lock_timeout_s),
            "idle_in_transaction_session_timeout": _ms(max(self.statement_timeout_s * 2, 1.0)),
            "default_transaction_read_only": "on",
        }

    async def ensure(self) -> bool:
        """Connect if needed; True when a new connection was made. Raises the driver's error."""
        if self.connected:
            return False
        self.discard()
        if self.target.is_socket and not _socket_exists(self.target.socket_path):
            raise FileNotFoundError(self.target.socket_path)
        async with asyncio.timeout(self.connect_timeout_s):
            conn = await asyncpg.connect(
                host=self.target.host,
                port=self.target.port,
                user=self.target.user,
                password=self.target.password,
                database=self.target.database,
                ssl=ssl_argument(self.target),
                timeout=self.connect_timeout_s,
                command_timeout=None,
                server_settings=self.server_settings(),
            )
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                row = await conn.fetchrow(_SESSION_INFO)
        except BaseException:
            conn.terminate()
            raise
        self.connection = conn
        self.connects += 1
        self.session = SessionInfo(
            user=row[0],
            superuser=bool(row[1]),
            read_all_stats=bool(row[2]),
            monitor=bool(row[3]),
            server_version_num=int(row[4]),
            database=row[5],
            pid=int(row[6]),
        )
        return True

    def discard(self) -> None:
        """Drop the connection without waiting on the server (it may be hung)."""
        conn, self.connection = self.connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def aclose(self) -> None:
        conn, self.connection = self.connection, None
        if conn is None:
            return
        try:
            async with asyncio.timeout(1.0):
                await conn.close()
        except asyncio.CancelledError:
            conn.terminate()
            raise
        except Exception:
            conn.terminate()
