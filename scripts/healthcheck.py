"""The container's HEALTHCHECK: GET /healthz on the address the daemon listens on.

The address is ``WATCHDOG_LISTEN`` (the image sets it and the shipped ``watchdog.yaml`` reads it), so
changing the port with ``-e WATCHDOG_LISTEN=0.0.0.0:8080`` moves the health check with it. A wildcard host
(``0.0.0.0``, ``::``, empty) is checked on loopback. Standard library only; proxies are ignored.
Exit 0 when /healthz answers 200, else 1 with one line saying why.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_LISTEN = "0.0.0.0:9108"
TIMEOUT_S = 3.0


def healthz_url(listen: str) -> str:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → the /healthz URL to check from inside the container."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"WATCHDOG_LISTEN={listen!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(port)}/healthz"


def check(listen: str, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    try:
        url = healthz_url(listen)
    except ValueError as exc:
        return False, str(exc)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"
    return status == 200, f"{url}: HTTP {status}"


def main() -> int:
    healthy, message = check(os.environ.get("WATCHDOG_LISTEN") or DEFAULT_LISTEN)
    print(message)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
