"""Check the gRPC change stream of a running Nightjar core from Python.

Opens WatchChanges for entries, writes a treatment and an entry with Create,
and checks that the stream delivers the entry's change (operation CREATE, the
same identifier, the document with every field sent plus srvModified) and
nothing of other collections. Also checks that an unknown access token is
rejected with UNAUTHENTICATED.

Environment:
  NIGHTJAR_GRPC_URL       core URL, such as http://127.0.0.1:50051
  NIGHTJAR_ACCESS_TOKEN   access token of a subject that may create and read entries and treatments

Exits 0 when every check passes, 1 on a failed check, 2 on missing input.
"""

import json
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_stubs import generate  # noqa: E402

# Seconds to wait for the channel, each unary call, and each expected change.
WAIT_SECONDS = 10.0
# Seconds to keep reading before concluding that no unexpected change arrives.
SETTLE_SECONDS = 0.5


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


def describe_change(change) -> str:
    document = change.document.decode("utf-8", errors="replace")
    return (
        f"Change(collection={change.collection!r}, operation={change.operation}, "
        f"identifier={change.identifier!r}, server_modified={change.server_modified}, "
        f"cursor={change.cursor!r}, document={document})"
    )


def read_changes(stream, changes: "queue.Queue") -> None:
    """Put every change of `stream` on `changes`, then the exception that ended it (or None)."""
    try:
        for change in stream:
            changes.put(change)
        changes.put(None)
    except grpc.RpcError as error:
        changes.put(error)


def check_unknown_token_rejected(stub, pb) -> None:
    metadata = (("authorization", "Bearer nosuchsubj-0123456789abcdef"),)
    stream = stub.WatchChanges(pb.WatchChangesRequest(collections=["entries"]), metadata=metadata, timeout=WAIT_SECONDS)
    try:
        first = next(stream)
        fail(f"WatchChanges with an unknown access token delivered {describe_change(first)}")
    except StopIteration:
        fail("WatchChanges with an unknown access token ended without an error")
    except grpc.RpcError as error:
        check(
            error.code() == grpc.StatusCode.UNAUTHENTICATED,
            f"WatchChanges with an unknown access token failed with {error.code()}: {error.details()}, expected UNAUTHENTICATED",
        )
    print("ok - WatchChanges rejects an unknown access token")


def check_entry_change(stub, pb, metadata) -> None:
    # Start from the current cursor, so the writes below are replayed even if they
    # commit before the stream is set up.
    start = stub.GetCursor(pb.GetCursorRequest(), metadata=metadata, timeout=WAIT_SECONDS).cursor
    check(start != "", "GetCursor returned an empty cursor")
    stream = stub.WatchChanges(pb.WatchChangesRequest(collections=["entries"], cursor=start), metadata=metadata)

    changes: "queue.Queue" = queue.Queue()
    reader = threading.Thread(target=read_changes, args=(stream, changes), daemon=True)
    reader.start()

    device = f"nightjar-python-{os.getpid()}"
    now_ms = int(time.time() * 1000)

    # A treatment first: the entries-only stream must not deliver it.
    treatment = {"eventType": "Note", "notes": "grpc python client", "date": now_ms - 1000, "device": device, "app": "nightjar-python-test"}
    stub.Create(pb.CreateRequest(collection="treatments", document=json.dumps(treatment).encode()), metadata=metadata, timeout=WAIT_SECONDS)

    sent = {"type": "sgv", "sgv": 135, "direction": "FortyFiveUp", "date": now_ms, "device": device, "app": "nightjar-python-test"}
    try:
        written = stub.Create(pb.CreateRequest(collection="entries", document=json.dumps(sent).encode()), metadata=metadata, timeout=WAIT_SECONDS)
    except grpc.RpcError as error:
        fail(f"Create of entry {sent} failed: {error.code()}: {error.details()}")
    check(written.inserted, f"Create of a new entry returned inserted false: {written}")
    check(written.identifier != "", f"Create of a new entry returned no identifier: {written}")

    # Read changes until the entry's arrives; remember everything else seen.
    seen = []
    deadline = time.monotonic() + WAIT_SECONDS
    change = None
    while change is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            fail(f"no change for entry {written.identifier} within {WAIT_SECONDS} s; changes seen: {[describe_change(c) for c in seen]}")
        try:
            item = changes.get(timeout=remaining)
        except queue.Empty:
            continue
        if item is None or isinstance(item, grpc.RpcError):
            detail = "ended" if item is None else f"failed with {item.code()}: {item.details()}"
            fail(f"WatchChanges {detail} before the change of entry {written.identifier}; changes seen: {[describe_change(c) for c in seen]}")
        if item.operation == pb.OPERATION_CHECKPOINT:
            # A checkpoint only reports progress: no collection, no document.
            check(item.collection == "" and item.document == b"", f"checkpoint carries a change: {describe_change(item)}")
            check(int(item.cursor) > int(start), f"checkpoint {describe_change(item)} is not after the start cursor {start}")
        elif item.identifier == written.identifier:
            change = item
        else:
            seen.append(item)

    described = describe_change(change)
    check(change.collection == "entries", f"collection of {described}")
    check(change.operation == pb.OPERATION_CREATE, f"operation of {described} is not OPERATION_CREATE ({pb.OPERATION_CREATE})")
    check(change.cursor != "", f"cursor of {described} is empty")
    check(change.server_modified == written.last_modified, f"server_modified of {described} differs from Create's last_modified {written.last_modified}")

    try:
        document = json.loads(change.document)
    except ValueError as error:
        fail(f"document of {described} is not JSON: {error}")
    check(isinstance(document, dict), f"document of {described} is not a JSON object")
    for field, value in sent.items():
        check(document.get(field) == value, f"field {field} of {described} differs from the value sent, {value!r}")
    check(document.get("identifier") == written.identifier, f"identifier field of {described}")
    srv_modified = document.get("srvModified")
    check(isinstance(srv_modified, int) and not isinstance(srv_modified, bool), f"srvModified of {described} is not an integer")
    check(srv_modified == change.server_modified, f"srvModified of {described} differs from server_modified")

    # Nothing of another collection may follow on an entries-only stream.
    time.sleep(SETTLE_SECONDS)
    while not changes.empty():
        item = changes.get_nowait()
        if item is not None and not isinstance(item, grpc.RpcError):
            seen.append(item)
    foreign = [describe_change(c) for c in seen if c.collection != "entries"]
    check(not foreign, f"the entries-only stream delivered changes of other collections: {foreign}")

    stream.cancel()
    reader.join(timeout=WAIT_SECONDS)
    print("ok - WatchChanges delivers the entry created through gRPC")


def main() -> int:
    target = grpc_target(require_env("NIGHTJAR_GRPC_URL"))
    access_token = require_env("NIGHTJAR_ACCESS_TOKEN")

    with tempfile.TemporaryDirectory(prefix="nightjar-stubs-") as stubs:
        generate(Path(stubs))
        sys.path.insert(0, stubs)
        from nightjar.storage.v1 import storage_pb2 as pb
        from nightjar.storage.v1 import storage_pb2_grpc as pb_grpc

        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=WAIT_SECONDS)
            except grpc.FutureTimeoutError:
                fail(f"no gRPC connection to {target} within {WAIT_SECONDS} s")
            stub = pb_grpc.StorageStub(channel)
            metadata = (("authorization", f"Bearer {access_token}"),)

            check_unknown_token_rejected(stub, pb)
            check_entry_change(stub, pb, metadata)

    print("grpc python client: 2 checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
