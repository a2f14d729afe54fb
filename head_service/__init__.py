"""The classifier head behind TensorFlow Serving's REST and gRPC protocols (a stand-in where the binary is absent)."""
