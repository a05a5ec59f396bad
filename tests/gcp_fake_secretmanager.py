"""Secret Manager's gRPC API (``google.cloud.secretmanager.v1.SecretManagerService/AccessSecretVersion``) on
a plaintext loopback port, built with grpcio from the client library's own request and response messages,
so the real ``SecretManagerServiceClient`` talks to it as to Google.

It holds secrets as lists of versions (``add_version``), resolves ``latest`` to the newest enabled version as
Secret Manager does, answers NOT_FOUND / FAILED_PRECONDITION (a disabled version) / PERMISSION_DENIED (secrets
in ``denied``) like the real service, and answers the next ``script``ed status codes before any of that
(UNAVAILABLE for an outage). Every request's name is recorded in ``requests``. A context manager that stops
its server; ``endpoint`` is the ``http://127.0.0.1:PORT`` for ``google_cloud.endpoints["secretmanager"]``.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn

import google_crc32c
import grpc  # type: ignore[import-untyped]
from google.cloud.secretmanager_v1 import (
    AccessSecretVersionRequest,
    AccessSecretVersionResponse,
    SecretPayload,
)

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"


@dataclass
class Version:
    data: bytes
    enabled: bool = True


class FakeSecretManager:
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], list[Version]] = {}
        self.denied: set[str] = set()
        self.script: list[grpc.StatusCode] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_version(self, project: str, secret: str, value: str | bytes) -> int:
        data = value.encode() if isinstance(value, str) else value
        with self._lock:
            versions = self.secrets.setdefault((project, secret), [])
            versions.append(Version(data))
            return len(versions)

    def __enter__(self) -> FakeSecretManager:
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                    self._access,
                    request_deserializer=AccessSecretVersionRequest.deserialize,
                    response_serializer=AccessSecretVersionResponse.serialize,
                )
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop(grace=None).wait()

    def _access(self, request: AccessSecretVersionRequest, context: Any) -> AccessSecretVersionResponse:
        with self._lock:
            self.requests.append(request.name)
            if self.script:
                code = self.script.pop(0)
                _abort(context, code, f"scripted {code.name}")
            parts = request.name.split("/")
            if len(parts) != 6 or parts[0] != "projects" or parts[2] != "secrets" or parts[4] != "versions":
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad name {request.name}")
            project, secret, version = parts[1], parts[3], parts[5]
            if secret in self.denied:
                _abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"Permission 'secretmanager.versions.access' denied for resource '{request.name}'",
                )
            versions = self.secrets.get((project, secret))
            if not versions:
                _abort(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    f"Secret [{request.name}] not found or has no versions.",
                )
            if version == "latest":
                enabled = [i for i, v in enumerate(versions, 1) if v.enabled]
                if not enabled:
                    _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "no enabled versions")
                number = enabled[-1]
            else:
                number = int(version)
                if not 1 <= number <= len(versions):
                    _abort(context, grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
                if not versions[number - 1].enabled:
                    _abort(
                        context, grpc.StatusCode.FAILED_PRECONDITION, f"{request.name} is in DISABLED state."
                    )
            data = versions[number - 1].data
            return AccessSecretVersionResponse(
                name=f"projects/{project}/secrets/{secret}/versions/{number}",
                payload=SecretPayload(data=data, data_crc32c=int(google_crc32c.value(data))),
            )


def _abort(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("abort() raises")
