"""Config as code: YAML instances in probes/, slo/, alerts/ and runbooks/, validated by pydantic models."""

from watchdog.config.loader import ConfigError, ConfigProblem, WatchdogConfig, load_config

__all__ = ["ConfigError", "ConfigProblem", "WatchdogConfig", "load_config"]
