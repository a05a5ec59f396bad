"""The reference service: a small stand-in for the watched app with the YAML/DB dual data path.

It speaks the production HTTP contract (health, auth, scenario and framework content) so probes, tests,
the ``watchdog demo`` command and the benchmarks have something real to hit, and it lets faults be
injected on the database path only. Like a real service it reads the YAML/DB flag through the OpenFeature
SDK and flagd's in-process provider (``flag.py``) and exports per-cohort request metrics (``metrics.py``).
"""

from __future__ import annotations

from watchdog.demo.app import ReferenceService, create_app
from watchdog.demo.faults import Faults
from watchdog.demo.ratelimit import RateLimits
from watchdog.demo.server import ReferenceServer, serve

__all__ = ["Faults", "RateLimits", "ReferenceServer", "ReferenceService", "create_app", "serve"]
