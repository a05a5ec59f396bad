# sre-watchdog daemon.   docker build -t sre-watchdog .   then see README "Deployment" for `docker run`.
# Config: /etc/watchdog (the example config is baked in; mount yours over it, read-only).
# State:  the volume /var/lib/watchdog (SQLite; or set WATCHDOG_STATE=postgresql://… to share one store).
# Listen: WATCHDOG_LISTEN (default 0.0.0.0:9108); the HEALTHCHECK follows it.
# Cloud Run: deploy/service.yaml (containerPort 9108, so Cloud Run's PORT is the port the image listens on; a
# config without `listen` listens on $PORT). Its K_SERVICE makes the log Cloud Logging's JSON shape on stdout;
# state belongs in PostgreSQL there (the filesystem is memory and goes with the instance). README "Deploy to
# Cloud Run". WATCHDOG_EXTRAS (build arg, default gcp): optional dependencies installed with the rest, the
# Google Cloud clients, imported only when watchdog.yaml's google_cloud asks for them; empty for a smaller image.
# tests/test_packaging.py performs these steps on the host: the wheel, its install outside the source tree,
# `watchdog validate` and `watchdog run` + this HEALTHCHECK as an unprivileged user; .dockerignore checked.

FROM python:3.11-slim AS build
ARG WATCHDOG_EXTRAS=gcp
WORKDIR /src
# The dependency list first, on its own: the runtime stage installs it in a layer that is rebuilt only when
# the list changes, not on every source edit.
COPY pyproject.toml scripts/requirements.py ./
RUN python requirements.py pyproject.toml ${WATCHDOG_EXTRAS} > requirements.txt
COPY README.md ./
COPY watchdog ./watchdog
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/watchdog --create-home watchdog
COPY --from=build /src/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --requirement /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
COPY scripts/healthcheck.py /usr/local/lib/watchdog/healthcheck.py
COPY watchdog.yaml /etc/watchdog/watchdog.yaml
COPY probes /etc/watchdog/probes
COPY slo /etc/watchdog/slo
COPY alerts /etc/watchdog/alerts
COPY runbooks /etc/watchdog/runbooks
USER watchdog
WORKDIR /var/lib/watchdog
VOLUME ["/var/lib/watchdog"]
ENV WATCHDOG_STATE=/var/lib/watchdog/state.db \
    WATCHDOG_LISTEN=0.0.0.0:9108 \
    PYTHONUNBUFFERED=1
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/usr/local/lib/watchdog/healthcheck.py"]
ENTRYPOINT ["watchdog"]
CMD ["run", "--config", "/etc/watchdog"]
