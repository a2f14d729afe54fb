"""TF Serving's MonitoringConfig and BatchingParameters messages, which `tensorflow-serving-api` does not ship.

Built at run time with upstream's package, names and field numbers (`config/monitoring_config.proto`,
`servables/tensorflow/session_bundle_config.proto`), so the same text files parse here and in the binary."""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.message import Message

_FIELD = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="head_service/tfserving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )

    def message(name: str, fields: list[tuple[str, int, int, str, int]]) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, kind, type_name, label in fields:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    optional, repeated = _FIELD.LABEL_OPTIONAL, _FIELD.LABEL_REPEATED
    int64, string = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    msg_kind = _FIELD.TYPE_MESSAGE
    message(
        "PrometheusConfig",
        [("enable", 1, _FIELD.TYPE_BOOL, "", optional), ("path", 2, _FIELD.TYPE_STRING, "", optional)],
    )
    message("MonitoringConfig", [("prometheus_config", 1, msg_kind, ".tensorflow.serving.PrometheusConfig", optional)])
    message(
        "BatchingParameters",
        [
            ("max_batch_size", 1, msg_kind, int64, optional),
            ("batch_timeout_micros", 2, msg_kind, int64, optional),
            ("max_enqueued_batches", 3, msg_kind, int64, optional),
            ("num_batch_threads", 4, msg_kind, int64, optional),
            ("thread_pool_name", 5, msg_kind, string, optional),
            ("allowed_batch_sizes", 6, _FIELD.TYPE_INT64, "", repeated),
            ("pad_variable_length_inputs", 7, _FIELD.TYPE_BOOL, "", optional),
        ],
    )
    return proto


def _classes() -> tuple[type[Message], type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(_file())
    monitoring = pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    batching = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    return message_factory.GetMessageClass(monitoring), message_factory.GetMessageClass(batching)


MonitoringConfig, BatchingParameters = _classes()
