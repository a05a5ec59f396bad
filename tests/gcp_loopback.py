"""Loopback servers that speak Google Cloud APIs, for the real client libraries pointed at them.

``FakeErrorReporting``: Error Reporting's gRPC service (``ReportErrorsService.ReportErrorEvent``) on a
plaintext loopback port, built with grpcio from the client library's own request and response messages;
it records every request and answers each with the next scripted status (OK when the script is empty),
after an optional delay. ``FakeLoggingRest``: Cloud Logging's REST API (``POST /v2/entries:write``) on
loopback, recording each request body and answering with the next scripted HTTP status. Both are context
managers that stop what they started; ``endpoint`` is the ``http://127.0.0.1:PORT`` to put in
``google_cloud.endpoints``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.cloud.errorreporting_v1beta1 import ReportErrorEventRequest, ReportErrorEventResponse

_ER_SERVICE = "google.devtools.clouderrorreporting.v1beta1.ReportErrorsService"


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class FakeErrorReporting:
    def __init__(self) -> None:
        self.requests: list[ReportErrorEventRequest] = []
        """Every request received, refused ones included."""
        self.accepted: list[ReportErrorEventRequest] = []
        self.answers: list[grpc.StatusCode] = []
        """Statuses to answer the next requests with, in order; OK once empty."""
        self.delay_s = 0.0
        self.endpoint = ""
        self._lock = threading.Lock()
        self._server: Any = None

    def _report(self, request: ReportErrorEventRequest, context: Any) -> ReportErrorEventResponse:
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.requests.append(request)
            code = self.answers.pop(0) if self.answers else grpc.StatusCode.OK
            if code == grpc.StatusCode.OK:
                self.accepted.append(request)
        if code != grpc.StatusCode.OK:
            context.abort(code, f"scripted {code.name}")
        return ReportErrorEventResponse()

    def __enter__(self) -> FakeErrorReporting:
        handler = grpc.method_handlers_generic_handler(
            _ER_SERVICE,
            {
                "ReportErrorEvent": grpc.unary_unary_rpc_method_handler(
                    self._report,
                    request_deserializer=ReportErrorEventRequest.deserialize,
                    response_serializer=ReportErrorEventResponse.serialize,
                )
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop(grace=None).wait(5)


class FakeLoggingRest:
    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []
        """Bodies of every ``entries:write`` request, refused ones included."""
        self.answers: list[int] = []
        """HTTP statuses for the next requests, in order; 200 once empty."""
        self.paths: list[str] = []
        self.endpoint = ""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The entries of accepted writes, each with the request's logName and resource filled in where the
        entry has none (as the API does)."""
        with self._lock:
            return [
                {"logName": w.get("logName"), "resource": w.get("resource"), **e}
                for w in self.writes
                if w.get("_status") == 200
                for e in w.get("entries", [])
            ]

    def __enter__(self) -> FakeLoggingRest:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                with fake._lock:
                    status = fake.answers.pop(0) if fake.answers else 200
                    fake.paths.append(self.path)
                    fake.writes.append({**body, "_status": status})
                if status == 200:
                    payload: dict[str, Any] = {}
                else:
                    names = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 403: "PERMISSION_DENIED"}
                    error = {"code": status, "message": "scripted", "status": names.get(status, "")}
                    payload = {"error": error}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the test reads what was recorded

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
