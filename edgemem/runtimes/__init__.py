"""Graph-only runtime sessions that drive any edgemem graph from its metadata: ONNX Runtime, OpenVINO,
TensorRT (the PyTorch reference ``torch`` is registered by ``edgemem.export``)."""

from edgemem.runtimes.base import Session
from edgemem.runtimes.registry import RUNTIMES, list_runtimes, open_session
from edgemem.runtimes.state_io import load_state, save_state

__all__ = ["RUNTIMES", "Session", "list_runtimes", "load_state", "open_session", "save_state"]
