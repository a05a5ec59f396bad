"""The daemon's HTTP face: the Starlette app (/metrics, /healthz, /readyz, status JSON), the uvicorn server,
and the Prometheus exposition (collectors read state at scrape time). It sees the daemon only through the
``DaemonView`` protocol in ``web.app``; nothing below it knows about exposition."""
