"""Small value types shared by the config models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from watchdog.core.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in config as ``30s``/``5m``/``2h``/``30d`` or a number."""

PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
"""Identifier used in metrics, file names (runbooks/<name>.md) and dedup keys."""
