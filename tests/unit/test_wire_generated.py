"""The committed protobuf code is what broker.proto generates today (`make proto`).

Compared by descriptor, not by text: the generated file's header names the
protoc version, which may differ between machines while the schema is the same.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2

from webrtc_broker.wire import broker_pb2

WIRE = Path(broker_pb2.__file__).parent


def without_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """protoc's descriptor sets name each field's JSON name; generated code leaves it out."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        without_json_names(message.nested_type)


def test_broker_pb2_is_generated_from_the_current_schema(tmp_path: Path) -> None:
    out = tmp_path / "broker.desc"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{WIRE}",
            f"--descriptor_set_out={out}",
            "broker.proto",
        ],
        check=True,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    without_json_names(fresh.message_type)
    committed = descriptor_pb2.FileDescriptorProto.FromString(broker_pb2.DESCRIPTOR.serialized_pb)
    assert committed == fresh, "webrtc_broker/wire/broker_pb2.py is stale: run `make proto`"
