"""The Cloud Run Admin API v2 on a plaintext loopback port, for the real google-cloud-run clients: the
``google.cloud.run.v2.Services`` methods GetService and UpdateService (a long-running operation),
``google.cloud.run.v2.Revisions/ListRevisions`` (paged) and ``google.longrunning.Operations/GetOperation``,
built with grpcio from the client library's own messages.

It holds one service and its revisions. UpdateService behaves as Cloud Run's does where the rollback depends
on it: the service sent replaces the stored one (so a request that dropped the template would show), a stale
``etag`` is ABORTED, traffic must name existing revisions and add up to 100 (INVALID_ARGUMENT otherwise), a
new etag and generation follow; the operation is not done at first and is done on the next GetOperation,
its response the updated service. ``traffic_statuses`` follow ``traffic`` (a LATEST entry without a
revision name, as Cloud Run reports it). ``script`` answers the next calls of a method with status codes
(UNAVAILABLE, PERMISSION_DENIED...) before any of that. Every request is recorded in ``requests`` as
(method, message). A context manager that stops its server; ``endpoint`` is the ``http://127.0.0.1:PORT``
for ``google_cloud.endpoints["run"]``.
"""

from __future__ import annotations

import threading
from concurrent import futures
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, NoReturn

import grpc  # type: ignore[import-untyped]
from google.cloud.run_v2 import (
    Condition,
    GetServiceRequest,
    ListRevisionsRequest,
    ListRevisionsResponse,
    Revision,
    RevisionTemplate,
    Service,
    TrafficTarget,
    TrafficTargetAllocationType,
    TrafficTargetStatus,
    UpdateServiceRequest,
)
from google.longrunning import operations_pb2  # type: ignore[import-untyped]
from google.protobuf import any_pb2  # type: ignore[import-untyped]

SERVICE = "projects/ai-square-prod/locations/asia-east1/services/ai-square"
LATEST = TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _abort(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("abort() raises")


class FakeCloudRun:
    def __init__(self, name: str = SERVICE) -> None:
        self.name = name
        self.revisions: list[Revision] = []
        self.service = Service(
            name=name,
            uri="https://ai-square-xyz-de.a.run.app",
            template=RevisionTemplate(service_account="ai-square@ai-square-prod.iam.gserviceaccount.com"),
            generation=1,
            etag="etag-1",
        )
        self.script: dict[str, list[grpc.StatusCode]] = {}
        self.requests: list[tuple[str, Any]] = []
        self.page_size = 2
        self._operations: dict[str, Service] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the test's side -----------------------------------------------------------------------------------
    def add_revision(self, short: str, minutes: int, ready: bool = True) -> None:
        state = Condition.State.CONDITION_SUCCEEDED if ready else Condition.State.CONDITION_FAILED
        self.revisions.append(
            Revision(
                name=f"{self.name}/revisions/{short}",
                service=self.name,
                create_time=T0 + timedelta(minutes=minutes),
                conditions=[Condition(type_="Ready", state=state)],
            )
        )
        if ready:
            self.service.latest_ready_revision = f"{self.name}/revisions/{short}"
        self.service.latest_created_revision = f"{self.name}/revisions/{short}"
        self._refresh_statuses()

    def set_traffic(self, targets: list[TrafficTarget]) -> None:
        self.service.traffic = targets
        self._refresh_statuses()

    def served(self) -> dict[str, int]:
        latest = self.service.latest_ready_revision.rsplit("/", 1)[-1]
        out: dict[str, int] = {}
        for s in self.service.traffic_statuses:
            if s.percent:
                rev = s.revision or latest
                out[rev] = out.get(rev, 0) + s.percent
        return out

    def calls(self, method: str) -> list[Any]:
        return [message for name, message in self.requests if name == method]

    def _refresh_statuses(self) -> None:
        self.service.traffic_statuses = [
            TrafficTargetStatus(type_=t.type_, revision=t.revision, percent=t.percent, tag=t.tag)
            for t in self.service.traffic
        ]

    # -- the server ----------------------------------------------------------------------------------------
    def __enter__(self) -> FakeCloudRun:
        def unary(fn: Any, request: Any, response: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request, response_serializer=response
            )

        handlers = [
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Services",
                {
                    "GetService": unary(self._get, GetServiceRequest.deserialize, Service.serialize),
                    "UpdateService": unary(
                        self._update,
                        UpdateServiceRequest.deserialize,
                        operations_pb2.Operation.SerializeToString,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Revisions",
                {
                    "ListRevisions": unary(
                        self._list, ListRevisionsRequest.deserialize, ListRevisionsResponse.serialize
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "google.longrunning.Operations",
                {
                    "GetOperation": unary(
                        self._operation,
                        operations_pb2.GetOperationRequest.FromString,
                        operations_pb2.Operation.SerializeToString,
                    )
                },
            ),
        ]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers(handlers)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop(grace=None).wait()

    def _begin(self, method: str, request: Any, context: Any) -> None:
        self.requests.append((method, request))
        queue = self.script.get(method)
        if queue:
            code = queue.pop(0)
            _abort(context, code, f"scripted {code.name}")

    def _get(self, request: GetServiceRequest, context: Any) -> Service:
        with self._lock:
            self._begin("GetService", request, context)
            if request.name != self.name:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"Resource '{request.name}' was not found")
            return Service(self.service)

    def _list(self, request: ListRevisionsRequest, context: Any) -> ListRevisionsResponse:
        with self._lock:
            self._begin("ListRevisions", request, context)
            if request.parent != self.name:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"Resource '{request.parent}' was not found")
            start = int(request.page_token or 0)
            end = start + self.page_size
            newest_first = sorted(self.revisions, key=lambda r: r.create_time, reverse=True)
            return ListRevisionsResponse(
                revisions=newest_first[start:end],
                next_page_token=str(end) if end < len(newest_first) else "",
            )

    def _update(self, request: UpdateServiceRequest, context: Any) -> operations_pb2.Operation:
        with self._lock:
            self._begin("UpdateService", request, context)
            sent = request.service
            if sent.name != self.name:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"Resource '{sent.name}' was not found")
            if sent.etag and sent.etag != self.service.etag:
                _abort(context, grpc.StatusCode.ABORTED, "the etag does not match: the service changed")
            known = {r.name.rsplit("/", 1)[-1] for r in self.revisions}
            if sum(t.percent for t in sent.traffic) != 100:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "traffic must add up to 100")
            for t in sent.traffic:
                if t.type_ == REVISION and t.revision not in known:
                    _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"no revision {t.revision}")
            updated = Service(sent)
            generation = self.service.generation + 1
            updated.generation = generation
            updated.observed_generation = generation
            updated.etag = f"etag-{generation}"
            updated.latest_ready_revision = self.service.latest_ready_revision
            updated.latest_created_revision = self.service.latest_created_revision
            updated.uri = self.service.uri
            self.service = updated
            self._refresh_statuses()
            name = f"projects/ai-square-prod/locations/asia-east1/operations/op-{generation}"
            self._operations[name] = Service(self.service)
            return operations_pb2.Operation(name=name, done=False, metadata=_packed(self.service))

    def _operation(
        self, request: operations_pb2.GetOperationRequest, context: Any
    ) -> operations_pb2.Operation:
        with self._lock:
            self._begin("GetOperation", request, context)
            result = self._operations.get(request.name)
            if result is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"no operation {request.name}")
            return operations_pb2.Operation(
                name=request.name, done=True, metadata=_packed(result), response=_packed(result)
            )


def _packed(service: Service) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(Service.pb(service))
    return packed
