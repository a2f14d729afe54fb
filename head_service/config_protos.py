"""TF Serving's MonitoringConfig and BatchingParameters messages, which `tensorflow-serving-api` does not ship.

Built with upstream's package, names and field numbers (`config/monitoring_config.proto`,
`servables/tensorflow/session_bundle_config.proto`), so the same text files parse here and in the binary."""

from service_common.protobuf import ProtoFile, build_messages

_INT64 = ".google.protobuf.Int64Value"

_MESSAGES = build_messages(
    [
        ProtoFile(
            "head_service/tfserving_configs.proto",
            "tensorflow.serving",
            {
                "PrometheusConfig": [("enable", 1, "bool"), ("path", 2, "string")],
                "MonitoringConfig": [("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig")],
                "BatchingParameters": [
                    ("max_batch_size", 1, _INT64),
                    ("batch_timeout_micros", 2, _INT64),
                    ("max_enqueued_batches", 3, _INT64),
                    ("num_batch_threads", 4, _INT64),
                    ("thread_pool_name", 5, ".google.protobuf.StringValue"),
                    ("allowed_batch_sizes", 6, "repeated int64"),
                    ("pad_variable_length_inputs", 7, "bool"),
                ],
            },
        )
    ]
)
MonitoringConfig = _MESSAGES["tensorflow.serving.MonitoringConfig"]
BatchingParameters = _MESSAGES["tensorflow.serving.BatchingParameters"]
