"""Protobuf message classes built at run time from field lists, in a private descriptor pool.

For the few upstream messages we need without their generated code: TF Serving's config messages
(which `tensorflow-serving-api` does not ship) and the Predict/ModelStatus subset the orchestrator
speaks (whose generated code imports TensorFlow). Names and field numbers are upstream's, so the
bytes on the wire are the same; fields we leave out are skipped by the parser as unknown fields."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.message import Message

_FIELD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _FIELD.TYPE_BOOL,
    "bytes": _FIELD.TYPE_BYTES,
    "float": _FIELD.TYPE_FLOAT,
    "int32": _FIELD.TYPE_INT32,
    "int64": _FIELD.TYPE_INT64,
    "string": _FIELD.TYPE_STRING,
}

# (name, number, type): type is a scalar above, a message by full name (".pkg.Name"), "repeated <type>"
# or "map<string, <type>>". Enums are declared int32: the same varint on the wire.
Fields = Sequence[tuple[str, int, str]]


@dataclass(frozen=True)
class ProtoFile:
    """One .proto file's worth of messages; nested ones are named "Outer.Inner"."""

    name: str
    package: str
    messages: Mapping[str, Fields]


def _set_type(target: descriptor_pb2.FieldDescriptorProto, kind: str) -> None:
    if kind in _SCALARS:
        target.type = _SCALARS[kind]
    elif kind.startswith("."):
        target.type, target.type_name = _FIELD.TYPE_MESSAGE, kind
    else:
        raise ValueError(f"unknown field type {kind!r}")


def _add_message(
    file: descriptor_pb2.FileDescriptorProto, parents: dict[str, descriptor_pb2.DescriptorProto], name: str
) -> descriptor_pb2.DescriptorProto:
    outer, _, inner = name.rpartition(".")
    message = parents[outer].nested_type.add(name=inner) if outer else file.message_type.add(name=name)
    parents[name] = message
    return message


def _add_field(message: descriptor_pb2.DescriptorProto, full_name: str, name: str, number: int, kind: str) -> None:
    target = message.field.add(name=name, number=number, label=_FIELD.LABEL_OPTIONAL)
    if kind.startswith("map<"):
        key, value = (part.strip() for part in kind.removeprefix("map<").removesuffix(">").split(","))
        entry = message.nested_type.add(name="".join(p.capitalize() for p in name.split("_")) + "Entry")
        entry.options.map_entry = True
        _add_field(entry, "", "key", 1, key)
        _add_field(entry, "", "value", 2, value)
        target.label, target.type, target.type_name = (
            _FIELD.LABEL_REPEATED,
            _FIELD.TYPE_MESSAGE,
            f"{full_name}.{entry.name}",
        )
    elif kind.startswith("repeated "):
        target.label = _FIELD.LABEL_REPEATED
        _set_type(target, kind.removeprefix("repeated "))
    else:
        _set_type(target, kind)


def _descriptor(proto: ProtoFile) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name=proto.name,
        package=proto.package,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto", "google/protobuf/any.proto"],
    )
    parents: dict[str, descriptor_pb2.DescriptorProto] = {}
    for name, fields in proto.messages.items():
        message = _add_message(file, parents, name)
        for field_name, number, kind in fields:
            _add_field(message, f".{proto.package}.{name}", field_name, number, kind)
    return file


def build_messages(files: Sequence[ProtoFile]) -> dict[str, type[Message]]:
    """Message classes by full name ("tensorflow.serving.PredictRequest"); files in dependency order."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    dependencies: list[str] = []
    classes: dict[str, type[Message]] = {}
    for proto in files:
        file = _descriptor(proto)
        file.dependency.extend(dependencies)
        pool.Add(file)
        dependencies.append(proto.name)
        for name in proto.messages:
            full_name = f"{proto.package}.{name}"
            classes[full_name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
    return classes
