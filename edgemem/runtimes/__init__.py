"""Runtime sessions that drive any edgemem graph from its metadata: torch, ONNX Runtime, OpenVINO, TensorRT."""
