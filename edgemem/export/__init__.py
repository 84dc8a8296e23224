"""Export of streaming models to stateful ONNX graphs (and OpenVINO IR / TensorRT engines), and verification."""
