"""The composition root: the one place config becomes live objects.

``wire(config)`` builds the store, the probes (through the probe registry, which builds their metric
sources), the notifiers (notifier registry), the incident manager, the page dispatcher and the metrics
registry, and hands them to the daemon as one ``Components``. Tests pass their own store, clock, probes
or notifiers; everything they do not pass is built exactly as in production.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from watchdog.canary import cohorts
from watchdog.canary.guard import CanaryGuard
from watchdog.config.loader import WatchdogConfig
from watchdog.core.clock import Clock, SystemClock
from watchdog.incidents.manager import IncidentManager
from watchdog.notify.base import Notifier
from watchdog.notify.dispatch import Dispatcher
from watchdog.notify.registry import FALLBACK_KIND, build_notifiers
from watchdog.probes.base import Probe
from watchdog.probes.registry import ProbeBuilder
from watchdog.runtime.selfwatch import HeartbeatSender, SelfWatch
from watchdog.store.base import LATENCY_BUCKETS_S, StateStore
from watchdog.web.metrics import ProbeMetrics, StoreSnapshotCollector, build_registry

if TYPE_CHECKING:
    from watchdog.runtime.gcp_export import CloudMonitoringExporter

_log = logging.getLogger(__name__)


def default_instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def latency_edges(config: WatchdogConfig) -> tuple[float, ...]:
    """The store's and /metrics' latency bucket edges: the defaults plus every latency threshold the
    config names, so "ratio under threshold" SLIs are exact."""
    return tuple(sorted({*LATENCY_BUCKETS_S, *config.latency_thresholds()}))


def open_configured_store(config: WatchdogConfig, state: str | None = None) -> StateStore:
    """The store named by ``state`` (default: ``settings.state``), not yet opened; ValueError if bad."""
    from watchdog.store import open_store

    return open_store(
        state or config.settings.state,
        latency_buckets=latency_edges(config),
        raw_retention_s=config.settings.retention.raw,
        minute_retention_s=config.settings.retention.minutes,
    )


@dataclass
class Components:
    """Everything one daemon runs, built from one config."""

    config: WatchdogConfig
    clock: Clock
    instance: str
    store: StateStore
    probes: list[Probe]
    notifiers: dict[str, Notifier]
    incidents: IncidentManager
    dispatcher: Dispatcher
    registry: CollectorRegistry
    probe_metrics: ProbeMetrics
    snapshot: StoreSnapshotCollector
    selfwatch: SelfWatch
    guards: list[CanaryGuard] = field(default_factory=list)
    heartbeat: HeartbeatSender | None = None
    exporter: CloudMonitoringExporter | None = None
    """Writes the watchdog's results to Cloud Monitoring (``google_cloud.export_metrics``)."""
    warnings: list[str] = field(default_factory=list)
    """``deployment_warnings``: logged when the daemon starts."""
    _builder: ProbeBuilder | None = field(default=None, repr=False)

    async def close_probes(self) -> None:
        """Close every probe (best effort: one failing does not keep the others open), then the clients
        the probe builder shares between them."""
        for probe in self.probes:
            try:
                await probe.aclose()
            except Exception as exc:
                _log.warning("closing probe %s failed: %s", probe.name, exc)
        if self._builder is not None:
            await self._builder.aclose()


def notifier_kinds(config: WatchdogConfig) -> set[str]:
    """Every channel kind the escalation policies name."""
    return {target.type for policy in config.escalation for level in policy.levels for target in level.notify}


def build_guards(
    config: WatchdogConfig,
    store: StateStore,
    incidents: IncidentManager,
    clock: Clock,
    env: Mapping[str, str],
) -> list[CanaryGuard]:
    """One canary guard per rollout, each with its flag backend (``watchdog.flags.registry``) and, for a
    rollout with ``cloud_run``, its Cloud Run traffic rollback (``watchdog.canary.cloud_run``)."""
    from watchdog.canary.cloud_run import build_traffic_rollback
    from watchdog.flags.registry import build_flag_backend

    gcp = config.settings.google_cloud
    service, endpoints = (gcp.cloud_run_service, gcp.endpoints) if gcp is not None else ("", {})
    guards = [
        CanaryGuard(
            rollout,
            build_flag_backend(rollout.flag, env, clock),
            store,
            incidents,
            clock,
            traffic=build_traffic_rollback(rollout, service, endpoints, store, incidents, clock),
        )
        for rollout in config.rollouts
    ]
    for guard in guards:
        if cohorts.uses_cloud_run(guard.rollout):
            # Its Cloud Run cohorts read Cloud Monitoring with google_cloud's project and endpoint.
            cohorts.use(guard, cohorts.cloud_run_reader(gcp))
    return guards


def deployment_warnings(config: WatchdogConfig, env: Mapping[str, str]) -> list[str]:
    """What the config asks for that the environment does not provide: pages that would go to the log
    instead of Slack, buttons nobody can press, receivers that refuse every request. Not errors: the
    daemon runs, and says so (``validate`` prints these; ``run`` logs them)."""
    warnings: list[str] = []
    slack_policies = sorted(
        {p.name for p in config.escalation for lv in p.levels for t in lv.notify if t.type == "slack"}
    )
    if slack_policies and not env.get("SLACK_BOT_TOKEN", "").strip():
        warnings.append(
            f"escalation {', '.join(slack_policies)} pages Slack but SLACK_BOT_TOKEN is not set: "
            "those pages go to the log instead"
        )
    if slack_policies and not env.get("SLACK_SIGNING_SECRET", "").strip():
        warnings.append(
            "SLACK_SIGNING_SECRET is not set: the Acknowledge/Resolve/Silence buttons on Slack pages are "
            "refused (POST /slack/interactions answers 503); the CLI still acts on incidents"
        )
    for intake in config.intake:
        if not env.get(intake.token_env, "").strip():
            warnings.append(
                f"intake {intake.name} ({intake.kind}) has no token: set {intake.token_env}, until then "
                "it refuses every request"
            )
    warnings.extend(google_cloud_warnings(config))
    return warnings


_RUN_SERVICE = re.compile(r"projects/[^/]+/locations/([^/]+)/services/[^/]+")


def google_cloud_warnings(config: WatchdogConfig) -> list[str]:
    """Regions that differ between the Cloud SQL instance, the Cloud Run service and the watchdog (the
    seed's first lesson: its staging "relation does not exist" errors were timeouts from Cloud Run in
    asia-east1 talking to Cloud SQL in us-central1), names not in their documented form, and integrations
    asked for without the ``gcp`` extra installed."""
    cloud = config.settings.google_cloud
    if cloud is None:
        return []
    warnings: list[str] = []
    regions: list[tuple[str, str]] = []
    if cloud.cloud_sql_instance:
        parts = cloud.cloud_sql_instance.split(":")
        if len(parts) == 3 and all(parts):
            regions.append((f"the Cloud SQL instance {cloud.cloud_sql_instance}", parts[1]))
        else:
            warnings.append(
                f"google_cloud.cloud_sql_instance {cloud.cloud_sql_instance!r} is not a connection name "
                "(PROJECT:REGION:INSTANCE)"
            )
    if cloud.cloud_run_service:
        match = _RUN_SERVICE.fullmatch(cloud.cloud_run_service)
        if match:
            regions.append((f"the Cloud Run service {cloud.cloud_run_service}", match.group(1)))
        else:
            warnings.append(
                f"google_cloud.cloud_run_service {cloud.cloud_run_service!r} is not "
                "projects/PROJECT/locations/REGION/services/SERVICE"
            )
    if cloud.region:
        regions.append(("the watchdog (google_cloud.region)", cloud.region))
    if len({region for _, region in regions}) > 1:
        where = "; ".join(f"{what} is in {region}" for what, region in regions)
        warnings.append(
            f"google_cloud regions differ: {where}. Every request between regions pays the distance (the "
            "seed's staging errors were such timeouts); put the service, its database and the watchdog in "
            "one region"
        )
    wanted = []
    if cloud.logging == "api":
        wanted.append(("google_cloud.logging: api", "google.cloud.logging"))
    if cloud.error_reporting is not None:
        wanted.append(("google_cloud.error_reporting", "google.cloud.errorreporting_v1beta1"))
    for what, module in wanted:
        if importlib.util.find_spec(module) is None:
            warnings.append(f"{what} needs the gcp extra (pip install 'sre-watchdog[gcp]'); it stays off")
    return warnings


def build_exporter(
    config: WatchdogConfig, registry: CollectorRegistry, instance: str, clock: Clock
) -> CloudMonitoringExporter | None:
    """The Cloud Monitoring exporter when ``google_cloud.export_metrics`` is set (its module, and Google's
    client, are imported only then)."""
    cloud = config.settings.google_cloud
    if cloud is None or cloud.export_metrics is None:
        return None
    from watchdog.runtime.gcp_export import CloudMonitoringExporter

    return CloudMonitoringExporter(cloud, cloud.export_metrics, registry, instance, clock=clock)


def wire(
    config: WatchdogConfig,
    *,
    store: StateStore | None = None,
    state: str | None = None,
    clock: Clock | None = None,
    probes: Sequence[Probe] | None = None,
    notifiers: Mapping[str, Notifier] | None = None,
    instance: str | None = None,
    env: Mapping[str, str] | None = None,
    guards: Sequence[CanaryGuard] | None = None,
) -> Components:
    """``env`` configures the notifiers (``SLACK_BOT_TOKEN``, ``SLACK_API_URL``); default: the process
    environment."""
    clock = clock or SystemClock()
    instance = instance or config.settings.instance or default_instance_name()
    store = store if store is not None else open_configured_store(config, state)
    builder: ProbeBuilder | None = None
    if probes is None:
        builder = ProbeBuilder(
            defaults=config.settings.defaults, clock=clock, google_cloud=config.settings.google_cloud
        )
        probes = builder.build_all(config.enabled_probes())
    environ: Mapping[str, str] = os.environ if env is None else env
    built_notifiers = (
        dict(notifiers) if notifiers is not None else build_notifiers(notifier_kinds(config), environ)
    )
    registry, probe_metrics, snapshot = build_registry(latency_edges(config))
    incidents = IncidentManager(config, store, clock)
    heartbeat = config.settings.heartbeat
    return Components(
        config=config,
        clock=clock,
        instance=instance,
        store=store,
        probes=list(probes),
        notifiers=built_notifiers,
        incidents=incidents,
        dispatcher=Dispatcher(store, built_notifiers, clock, instance, fallback=FALLBACK_KIND),
        registry=registry,
        probe_metrics=probe_metrics,
        snapshot=snapshot,
        selfwatch=SelfWatch(config, incidents, built_notifiers, clock, instance),
        guards=list(guards) if guards is not None else build_guards(config, store, incidents, clock, environ),
        heartbeat=HeartbeatSender(heartbeat) if heartbeat is not None and heartbeat.url.strip() else None,
        exporter=build_exporter(config, registry, instance, clock),
        warnings=deployment_warnings(config, environ) if notifiers is None else [],
        _builder=builder,
    )
