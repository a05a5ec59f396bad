# sre-watchdog daemon. Config is mounted at /etc/watchdog (probes/, slo/, alerts/, runbooks/, watchdog.yaml).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY watchdog ./watchdog
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/watchdog --create-home watchdog
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY probes /etc/watchdog/probes
COPY slo /etc/watchdog/slo
COPY alerts /etc/watchdog/alerts
COPY runbooks /etc/watchdog/runbooks
COPY watchdog.yaml /etc/watchdog/watchdog.yaml
USER watchdog
WORKDIR /var/lib/watchdog
ENV WATCHDOG_STATE=/var/lib/watchdog/state.db \
    WATCHDOG_LISTEN=0.0.0.0:9108
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["watchdog"]
CMD ["run", "--config", "/etc/watchdog"]
