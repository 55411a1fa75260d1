"""Generate Python gRPC stubs from the protobuf contract in proto/.

Run as a script to write them to tests/python/generated/ (ignored by git), or
call generate() with another directory. The modules land under
nightjar/storage/v1/ in that directory, so put it on sys.path and import
nightjar.storage.v1.storage_pb2 and storage_pb2_grpc.
"""

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = "nightjar/storage/v1/storage.proto"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "generated"


def generate(output_dir: Path) -> Path:
    """Generate the stubs into output_dir and return output_dir.

    Raises RuntimeError with protoc's exit code when generation fails; protoc
    prints its own error messages on stderr.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    # protoc needs the well-known types (google/protobuf/*.proto) that grpcio-tools ships.
    well_known = resources.files("grpc_tools") / "_proto"
    arguments = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={output_dir}",
        f"--grpc_python_out={output_dir}",
        str(PROTO_ROOT / PROTO_FILE),
    ]
    exit_code = protoc.main(arguments)
    if exit_code != 0:
        raise RuntimeError(f"protoc failed with exit code {exit_code} on {PROTO_ROOT / PROTO_FILE}")
    return output_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "output_dir",
        nargs="?",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"directory to write the stubs to (default {DEFAULT_OUTPUT})",
    )
    arguments = parser.parse_args()
    output_dir = generate(arguments.output_dir)
    print(f"generated stubs for {PROTO_FILE} in {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
