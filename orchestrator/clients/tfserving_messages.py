"""The TF Serving messages the orchestrator sends and reads, without `import tensorflow`.

`tensorflow-serving-api`'s generated modules import TensorFlow's (`tensorflow.core.framework`), which
loads the whole runtime: seconds of start-up and hundreds of MB for a process that only moves bytes.
This is the subset of upstream's `tensor.proto`, `tensor_shape.proto`, `meta_graph.proto`, `model.proto`,
`predict.proto`, `get_model_status.proto`, `get_model_metadata.proto` and `model_server_config.proto` we
use, same names and numbers; tests check it against the official stubs."""

from typing import Any

from service_common.protobuf import ProtoFile, build_messages

DT_FLOAT = 1  # tensorflow.DataType
DT_STRING = 7
AVAILABLE = 30  # tensorflow.serving.ModelVersionStatus.State

_SPEC = ".tensorflow.serving.ModelSpec"
_TENSOR = ".tensorflow.TensorProto"

_MESSAGES = build_messages(
    [
        ProtoFile(
            "orchestrator/tensorflow_subset.proto",
            "tensorflow",
            {
                "TensorShapeProto": [
                    ("dim", 2, "repeated .tensorflow.TensorShapeProto.Dim"),
                    ("unknown_rank", 3, "bool"),
                ],
                "TensorShapeProto.Dim": [("size", 1, "int64"), ("name", 2, "string")],
                "TensorProto": [
                    ("dtype", 1, "int32"),
                    ("tensor_shape", 2, ".tensorflow.TensorShapeProto"),
                    ("tensor_content", 4, "bytes"),
                    ("float_val", 5, "repeated float"),
                    ("string_val", 8, "repeated bytes"),
                ],
                "TensorInfo": [
                    ("name", 1, "string"),
                    ("dtype", 2, "int32"),
                    ("tensor_shape", 3, ".tensorflow.TensorShapeProto"),
                ],
                "SignatureDef": [
                    ("inputs", 1, "map<string, .tensorflow.TensorInfo>"),
                    ("outputs", 2, "map<string, .tensorflow.TensorInfo>"),
                    ("method_name", 3, "string"),
                ],
            },
        ),
        ProtoFile(
            "orchestrator/tensorflow_serving_subset.proto",
            "tensorflow.serving",
            {
                "ModelSpec": [
                    ("name", 1, "string"),
                    ("version", 2, ".google.protobuf.Int64Value"),
                    ("signature_name", 3, "string"),
                ],
                "PredictRequest": [
                    ("model_spec", 1, _SPEC),
                    ("inputs", 2, f"map<string, {_TENSOR}>"),
                    ("output_filter", 3, "repeated string"),
                ],
                "PredictResponse": [("outputs", 1, f"map<string, {_TENSOR}>"), ("model_spec", 2, _SPEC)],
                "GetModelStatusRequest": [("model_spec", 1, _SPEC)],
                "ModelVersionStatus": [("version", 1, "int64"), ("state", 2, "int32")],
                "GetModelStatusResponse": [
                    ("model_version_status", 1, "repeated .tensorflow.serving.ModelVersionStatus")
                ],
                "SignatureDefMap": [("signature_def", 1, "map<string, .tensorflow.SignatureDef>")],
                "GetModelMetadataRequest": [("model_spec", 1, _SPEC), ("metadata_field", 2, "repeated string")],
                "GetModelMetadataResponse": [
                    ("model_spec", 1, _SPEC),
                    ("metadata", 2, "map<string, .google.protobuf.Any>"),
                ],
                "ModelConfig": [("name", 1, "string"), ("base_path", 2, "string"), ("model_platform", 4, "string")],
                "ModelConfigList": [("config", 1, "repeated .tensorflow.serving.ModelConfig")],
                "ModelServerConfig": [("model_config_list", 1, ".tensorflow.serving.ModelConfigList")],
            },
        ),
    ]
)
TensorProto: Any = _MESSAGES["tensorflow.TensorProto"]
PredictRequest: Any = _MESSAGES["tensorflow.serving.PredictRequest"]
PredictResponse: Any = _MESSAGES["tensorflow.serving.PredictResponse"]
GetModelStatusRequest: Any = _MESSAGES["tensorflow.serving.GetModelStatusRequest"]
GetModelStatusResponse: Any = _MESSAGES["tensorflow.serving.GetModelStatusResponse"]
SignatureDefMap: Any = _MESSAGES["tensorflow.serving.SignatureDefMap"]
GetModelMetadataRequest: Any = _MESSAGES["tensorflow.serving.GetModelMetadataRequest"]
GetModelMetadataResponse: Any = _MESSAGES["tensorflow.serving.GetModelMetadataResponse"]
ModelServerConfig: Any = _MESSAGES["tensorflow.serving.ModelServerConfig"]
