"""sre-watchdog: synthetic probes, database checks, SLOs, incident pages escalated in Slack and a canary
guard that rolls the flag back by itself, for one service (see README "What works today").

The PyPI package ``watchdog`` (filesystem events) installs a top-level module of the same name. Both
cannot live in one environment, so we refuse to import when that distribution is present instead of
failing later with a confusing AttributeError.
"""

from __future__ import annotations

from watchdog._clash import check_for_name_clash

check_for_name_clash()

__version__ = "0.1.0"
