"""The Sparkplug B 3.0 payload schema for the tests, as a protobuf descriptor built here.

Decoding the bridge's payloads with the protobuf runtime from this descriptor checks them
against the schema independently of the bridge's hand-written encoder
(actors/mqtt/sparkplug.py). Transcribed from the specification's ``sparkplug_b.proto``
(package ``org.eclipse.tahu.protobuf``, proto2): the ``Payload`` and ``Metric`` fields the
bridge can write, with the schema's numbers and types; nested data sets, templates and
property sets are left out (a decoder skips unknown fields, so leaving them out hides nothing
the bridge writes in the fields kept).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

#: Metric fields: (name, number, type, oneof "value" member?).
_METRIC_FIELDS = [
    ("name", 1, _F.TYPE_STRING, False),
    ("alias", 2, _F.TYPE_UINT64, False),
    ("timestamp", 3, _F.TYPE_UINT64, False),
    ("datatype", 4, _F.TYPE_UINT32, False),
    ("is_historical", 5, _F.TYPE_BOOL, False),
    ("is_transient", 6, _F.TYPE_BOOL, False),
    ("is_null", 7, _F.TYPE_BOOL, False),
    ("int_value", 10, _F.TYPE_UINT32, True),
    ("long_value", 11, _F.TYPE_UINT64, True),
    ("float_value", 12, _F.TYPE_FLOAT, True),
    ("double_value", 13, _F.TYPE_DOUBLE, True),
    ("boolean_value", 14, _F.TYPE_BOOL, True),
    ("string_value", 15, _F.TYPE_STRING, True),
    ("bytes_value", 16, _F.TYPE_BYTES, True),
]

#: The DataType enum values the tests name.
DATATYPES = {"Int64": 4, "Double": 10, "Boolean": 11, "String": 12}


def _payload_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="sparkplug_b_test.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = file.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, number, kind, in_oneof in _METRIC_FIELDS:
        field = metric.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
        if in_oneof:
            field.oneof_index = 0
    payload.field.add(name="timestamp", number=1, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    payload.field.add(
        name="metrics",
        number=2,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".org.eclipse.tahu.protobuf.Payload.Metric",
    )
    payload.field.add(name="seq", number=3, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    payload.field.add(name="uuid", number=4, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    payload.field.add(name="body", number=5, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    )


Payload = _payload_class()


def decode(raw: bytes) -> Any:
    """A ``Payload`` message parsed from ``raw`` by the protobuf runtime."""
    message = Payload()
    message.ParseFromString(raw)
    return message


def metrics(payload: Any) -> dict[str, tuple[int, Any]]:
    """``{name: (datatype, value)}`` of a decoded payload (value None when ``is_null``)."""
    out: dict[str, tuple[int, Any]] = {}
    for metric in payload.metrics:
        which = metric.WhichOneof("value")
        value = None if metric.is_null or which is None else getattr(metric, which)
        if which == "long_value" and metric.datatype == DATATYPES["Int64"] and value >= 2**63:
            value -= 2**64
        out[metric.name] = (metric.datatype, value)
    return out


def command(name: str, value: Any, *, datatype: str) -> bytes:
    """An NCMD/DCMD payload writing ``value`` to metric ``name``, built by the runtime."""
    message = Payload()
    message.timestamp = 1
    metric = message.metrics.add(name=name, datatype=DATATYPES[datatype])
    if datatype == "Boolean":
        metric.boolean_value = value
    else:
        metric.string_value = value
    raw: bytes = message.SerializeToString()
    return raw
