"""Small value types shared by the config models."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from watchdog.core.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in config as ``30s``/``5m``/``2h``/``30d`` or a number."""

PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
"""Identifier used in metrics, file names (runbooks/<name>.md) and dedup keys."""

LISTEN_FORM = "HOST:PORT or [IPv6]:PORT with a port from 0 to 65535, e.g. 127.0.0.1:9108 or [::1]:9108"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT = re.compile(r"[0-9]+")


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every interface) → ``(host, port)``; host ``""`` for
    every interface. Raises ValueError saying what is wrong and the expected form.

    Only the shape is checked: a host name is not resolved here (no DNS lookup while validating).
    """
    head, colon, port_text = text.rpartition(":")
    if not colon:
        raise ValueError(f"{text!r} has no port; expected {LISTEN_FORM}")
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"{text!r}: port {port_text!r} is not a number; expected {LISTEN_FORM}")
    # Compare the digit count first: int() of a very long string is refused by Python itself.
    if len(port_text.lstrip("0")) > 5 or int(port_text) > 65535:
        raise ValueError(f"{text!r}: port {port_text} is out of range; expected {LISTEN_FORM}")
    port = int(port_text)
    if head.startswith("[") or head.endswith("]"):
        host = head[1:-1] if head.startswith("[") and head.endswith("]") else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"{text!r}: {head!r} is not an IPv6 address in brackets; expected {LISTEN_FORM}"
            ) from None
        return host, port
    if ":" in head:
        raise ValueError(f"{text!r}: an IPv6 address needs brackets, e.g. [::1]:{port}")
    if re.fullmatch(r"[0-9.]+", head):
        # Digits and dots are meant as IPv4, not as a host name: 127.0.0.300 is a typo, not a name.
        try:
            ipaddress.IPv4Address(head)
        except ValueError:
            raise ValueError(f"{text!r}: {head!r} is not an IPv4 address; expected {LISTEN_FORM}") from None
    elif head and (len(head) > 253 or not _HOST_NAME.fullmatch(head)):
        raise ValueError(f"{text!r}: {head!r} is not an IP address or host name; expected {LISTEN_FORM}")
    return head, port


def _check_listen(text: str) -> str:
    parse_listen_address(text)
    return text


ListenAddress = Annotated[str, AfterValidator(_check_listen)]
"""Where the HTTP face listens: ``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT``; see parse_listen_address."""
