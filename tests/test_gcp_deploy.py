"""Deployment to Cloud Run (issue 12 part 8): ``validate`` warns when the Cloud SQL instance, the Cloud Run
service and the watchdog are in different regions (the seed's first lesson); ``watchdog run`` listens on
Cloud Run's ``PORT`` when watchdog.yaml names no ``listen``; deploy/service.yaml is a Cloud Run service that
keeps the scheduler running (one instance, CPU always allocated), mounts Cloud SQL's sockets, takes secrets
from Secret Manager and probes the ports and paths the image serves; the image installs the gcp extra."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from watchdog.cli.main import main
from watchdog.cli.run import listen_address
from watchdog.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _validate(tmp_path: Path, google_cloud: str) -> tuple[int, list[str]]:
    (tmp_path / "watchdog.yaml").write_text("allow_no_probes: true\n" + google_cloud)
    result = CliRunner().invoke(main, ["validate", "--config", str(tmp_path)])
    return result.exit_code, [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def test_validate_warns_when_cloud_sql_and_cloud_run_are_in_different_regions(tmp_path: Path) -> None:
    code, warnings = _validate(
        tmp_path,
        "google_cloud:\n"
        "  project: ai-square\n"
        "  region: asia-east1\n"
        "  cloud_sql_instance: ai-square:us-central1:ai-square-db\n"
        "  cloud_run_service: projects/ai-square/locations/asia-east1/services/ai-square-frontend\n",
    )
    assert code == 0, "a warning, not a config error"
    [warning] = [w for w in warnings if "regions differ" in w]
    assert "the Cloud SQL instance ai-square:us-central1:ai-square-db is in us-central1" in warning
    assert "ai-square-frontend is in asia-east1" in warning
    assert "the watchdog (google_cloud.region) is in asia-east1" in warning


@pytest.mark.parametrize(
    "google_cloud",
    [
        "google_cloud:\n  project: p\n  region: asia-east1\n  cloud_sql_instance: p:asia-east1:db\n"
        "  cloud_run_service: projects/p/locations/asia-east1/services/web\n",
        # One region named: nothing to compare.
        "google_cloud:\n  project: p\n  cloud_sql_instance: p:asia-east1:db\n",
    ],
)
def test_validate_is_quiet_when_the_regions_agree(tmp_path: Path, google_cloud: str) -> None:
    code, warnings = _validate(tmp_path, google_cloud)
    assert code == 0 and [w for w in warnings if "google_cloud" in w] == []


def test_validate_warns_about_names_not_in_their_documented_form(tmp_path: Path) -> None:
    code, warnings = _validate(
        tmp_path,
        "google_cloud:\n  project: p\n  cloud_sql_instance: ai-square-db\n"
        "  cloud_run_service: ai-square-frontend\n",
    )
    assert code == 0
    assert any("cloud_sql_instance 'ai-square-db' is not a connection name" in w for w in warnings)
    assert any("cloud_run_service 'ai-square-frontend' is not projects/" in w for w in warnings)


def test_run_listens_on_port_when_watchdog_yaml_names_no_listen() -> None:
    unset = Settings()
    configured = Settings.model_validate({"listen": "127.0.0.1:9999"})
    assert listen_address(unset, None, {"PORT": "8080"}) == "0.0.0.0:8080"
    assert listen_address(unset, None, {}) == unset.listen
    assert listen_address(unset, None, {"PORT": "http"}) == unset.listen  # not a port: ignored
    assert listen_address(configured, None, {"PORT": "8080"}) == "127.0.0.1:9999"
    assert listen_address(configured, "127.0.0.1:7000", {"PORT": "8080"}) == "127.0.0.1:7000"


def _service() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "service.yaml").read_text())
    return data


def test_service_yaml_keeps_one_instance_with_cpu_always_allocated() -> None:
    service = _service()
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "1"
    assert annotations["autoscaling.knative.dev/maxScale"] == "1"
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    # Cloud SQL sockets: connection names in the service's own region (the seed's first lesson).
    region = service["metadata"]["labels"]["cloud.googleapis.com/location"]
    for name in annotations["run.googleapis.com/cloudsql-instances"].split(","):
        assert re.fullmatch(r"[^:]+:[a-z0-9-]+:[^:]+", name), name
        assert name.split(":")[1] == region


def test_service_yaml_probes_and_port_are_the_images() -> None:
    [container] = _service()["spec"]["template"]["spec"]["containers"]
    listen = re.search(r"WATCHDOG_LISTEN=(\S+)", (ROOT / "Dockerfile").read_text())
    assert listen is not None
    image_port = int(listen.group(1).rsplit(":", 1)[1])
    assert [p["containerPort"] for p in container["ports"]] == [image_port]
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": image_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": image_port}
    # Secrets come from Secret Manager, never as literal values in the file.
    env = {e["name"]: e for e in container["env"]}
    assert {"WATCHDOG_STATE", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "WATCHDOG_API_TOKEN"} <= set(env)
    assert all(
        "value" not in e and set(e["valueFrom"]["secretKeyRef"]) == {"name", "key"} for e in env.values()
    )


def test_the_image_installs_the_gcp_extra_by_default() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    extras = re.search(r"^ARG WATCHDOG_EXTRAS=(\S*)$", dockerfile, re.M)
    assert extras is not None and extras.group(1) == "gcp"
    assert "requirements.py pyproject.toml ${WATCHDOG_EXTRAS}" in dockerfile
    spec = importlib.util.spec_from_file_location("requirements", ROOT / "scripts" / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plain = module.requirements(ROOT / "pyproject.toml")
    with_gcp = module.requirements(ROOT / "pyproject.toml", ["gcp"])
    added = [r for r in with_gcp if r not in plain]
    assert {r.split(">")[0] for r in added} >= {"google-cloud-logging", "google-cloud-error-reporting"}
    assert not any(r.startswith("sre-watchdog") for r in with_gcp)
