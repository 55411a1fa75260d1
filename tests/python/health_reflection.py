"""Check the standard gRPC health and server reflection services of a Nightjar core.

Uses only the clients that grpcio-health-checking and grpcio-reflection ship,
with no stubs generated from proto/, as a generic tool such as grpcurl or a
Kubernetes probe would:

- Health/Check returns SERVING for the whole server (""), for
  nightjar.storage.v1.Storage and for nightjar.storage.v1.Admin, and fails
  with NOT_FOUND for a service the server does not have.
- Reflection (v1alpha, the version grpcio-reflection 1.85.1 implements)
  lists nightjar.storage.v1.Storage, nightjar.storage.v1.Admin and
  grpc.health.v1.Health.
- Reflection returns the file that defines nightjar.storage.v1.Storage, and a
  descriptor pool built from reflection alone resolves its methods with their
  request and response types.

Environment:
  NIGHTJAR_GRPC_URL   core URL, such as http://127.0.0.1:50051

Exits 0 when every check passes, 1 on a failed check, 2 on missing input.
"""

import os
import sys

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

# Seconds to wait for the channel and for each call.
WAIT_SECONDS = 10.0

STORAGE_SERVICE = "nightjar.storage.v1.Storage"
ADMIN_SERVICE = "nightjar.storage.v1.Admin"
HEALTH_SERVICE = "grpc.health.v1.Health"

# Methods of nightjar.storage.v1.Storage, with whether the server streams the response.
STORAGE_METHODS = {
    "Create": False,
    "Read": False,
    "Update": False,
    "Patch": False,
    "Delete": False,
    "Search": False,
    "History": False,
    "LastModified": False,
    "Status": False,
    "Version": False,
    "Authorize": False,
    "WatchChanges": True,
    "GetCursor": False,
}


def fail(message: str) -> None:
    print(f"FAILED - {message}", file=sys.stderr)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def require_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        print(f"missing environment variable {name}", file=sys.stderr)
        sys.exit(2)
    return value


def grpc_target(url: str) -> str:
    """Return the host:port that grpcio expects from a URL such as http://127.0.0.1:50051."""
    for scheme in ("http://", "grpc://"):
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/")
    return url.rstrip("/")


def check_health(channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING

    for service in ("", STORAGE_SERVICE, ADMIN_SERVICE):
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_SECONDS)
        except grpc.RpcError as error:
            fail(f"Health/Check for service {service!r} failed with {error.code()}: {error.details()}")
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        check(response.status == serving, f"Health/Check for service {service!r} returned {status}, expected SERVING")

    unknown = "nightjar.storage.v1.NoSuchService"
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=unknown), timeout=WAIT_SECONDS)
        fail(f"Health/Check for unknown service {unknown!r} returned {response}, expected NOT_FOUND")
    except grpc.RpcError as error:
        check(
            error.code() == grpc.StatusCode.NOT_FOUND,
            f"Health/Check for unknown service {unknown!r} failed with {error.code()}: {error.details()}, expected NOT_FOUND",
        )
    print("ok - Health/Check returns SERVING for the server, Storage and Admin")


def list_services(channel) -> list:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        responses = list(stub.ServerReflectionInfo(iter([request]), timeout=WAIT_SECONDS))
    except grpc.RpcError as error:
        fail(f"ServerReflectionInfo list_services failed with {error.code()}: {error.details()}")
    check(len(responses) == 1, f"ServerReflectionInfo returned {len(responses)} responses to one request")
    response = responses[0]
    check(
        response.HasField("list_services_response"),
        f"ServerReflectionInfo list_services returned {response}, expected list_services_response",
    )
    return [service.name for service in response.list_services_response.service]


def check_reflection_lists_services(channel) -> None:
    names = list_services(channel)
    for expected in (STORAGE_SERVICE, ADMIN_SERVICE, HEALTH_SERVICE):
        check(expected in names, f"reflection lists {names}, missing {expected}")
    print("ok - reflection lists Storage, Admin and Health")


def check_reflection_resolves_storage(channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)

    try:
        file = database.FindFileContainingSymbol(STORAGE_SERVICE)
    except KeyError as error:
        fail(f"reflection found no file containing {STORAGE_SERVICE}: {error}")
    check(file.package == "nightjar.storage.v1", f"file {file.name} containing {STORAGE_SERVICE} has package {file.package!r}")
    services = [service.name for service in file.service]
    check("Storage" in services, f"file {file.name} containing {STORAGE_SERVICE} defines services {services}")

    # The pool requests every file it needs from reflection, imports included.
    pool = descriptor_pool.DescriptorPool(database)
    try:
        storage = pool.FindServiceByName(STORAGE_SERVICE)
    except KeyError as error:
        fail(f"descriptor pool built from reflection cannot resolve {STORAGE_SERVICE}: {error}")
    methods = {method.name: method for method in storage.methods}
    for name, server_streaming in STORAGE_METHODS.items():
        check(name in methods, f"{STORAGE_SERVICE} from reflection has methods {sorted(methods)}, missing {name}")
        method = methods[name]
        check(
            method.server_streaming == server_streaming,
            f"{STORAGE_SERVICE}/{name} from reflection has server_streaming {method.server_streaming}, expected {server_streaming}",
        )
        check(method.input_type.full_name.startswith("nightjar.storage.v1."), f"{STORAGE_SERVICE}/{name} input type {method.input_type.full_name}")
        check(method.output_type.full_name.startswith("nightjar.storage.v1."), f"{STORAGE_SERVICE}/{name} output type {method.output_type.full_name}")

    create_request = methods["Create"].input_type
    fields = sorted(field.name for field in create_request.fields)
    check(
        {"collection", "document"} <= set(fields),
        f"{create_request.full_name} from reflection has fields {fields}, expected collection and document",
    )
    print(f"ok - reflection resolves {STORAGE_SERVICE} from {file.name} with its {len(methods)} methods")


def main() -> int:
    target = grpc_target(require_env("NIGHTJAR_GRPC_URL"))

    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=WAIT_SECONDS)
        except grpc.FutureTimeoutError:
            fail(f"no gRPC connection to {target} within {WAIT_SECONDS} s")

        check_health(channel)
        check_reflection_lists_services(channel)
        check_reflection_resolves_storage(channel)

    print("grpc health and reflection: 3 checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
