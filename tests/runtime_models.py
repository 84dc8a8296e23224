"""A tiny contract-following streaming model and its ONNX export, for the runtime and stream tests.

The runtimes must know no model: this one (a conv feature, a FIFO memory of the last two clip
features and a clip counter) is exported with torch's dynamo exporter directly and its metadata
written with ``edgemem.contract.write_contract``, independently of ``edgemem.export``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from edgemem import contract as C
from edgemem.models.registry import register_family
from edgemem.models.streaming import State, StreamingModel

FAMILY = "test_tinymem"


class TinyMem(StreamingModel):
    def __init__(self, classes: int = 5, frames: int = 4, size: int = 16, slots: int = 2) -> None:
        super().__init__()
        self.cfg = {"classes": classes, "frames": frames, "size": size, "slots": slots}
        self.class_names = [f"class_{i}" for i in range(classes)]
        self.conv = nn.Conv3d(3, 8, (2, 4, 4), (2, 4, 4))
        self.head = nn.Linear(8 * (slots + 1) + 1, classes)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (3, self.cfg["frames"], self.cfg["size"], self.cfg["size"])

    @property
    def num_classes(self) -> int:
        return self.cfg["classes"]

    def state_specs(self, batch_size: int | str = 1) -> list[C.TensorSpec]:
        return [
            C.TensorSpec("mem", (batch_size, self.cfg["slots"], 8)),
            C.TensorSpec("count", (batch_size, 1)),
        ]

    def step(self, frames: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        mem, count = state["mem"], state["count"]
        if reset is not None:
            keep = (~reset).to(mem.dtype)
            mem, count = mem * keep[:, None, None], count * keep[:, None]
        f = torch.tanh(self.conv(frames).mean((2, 3, 4)))
        logits = self.head(torch.cat([f, mem.flatten(1), count / 10], 1))
        return logits, {"mem": torch.cat([mem[:, 1:], f[:, None]], 1), "count": count + 1}

    def forward(
        self, frames: Tensor, reset: Tensor | None = None, mem: Tensor | None = None, count: Tensor | None = None
    ) -> Tensor | tuple[Tensor, ...]:
        """``forward(frames)``: logits with empty memory (the StreamingModel contract, what the exporter
        counts); with ``reset, mem, count``: the flat step that ``export`` below traces."""
        if mem is None or count is None:
            return self.step(frames, self.init_state(frames.shape[0]))[0]
        logits, new = self.step(frames, {"mem": mem, "count": count}, reset)
        return logits, new["mem"], new["count"]

    family = FAMILY

    def card_identity(self) -> tuple[str | None, str | None]:
        return None, "tests/runtime_models.py"

    def card_config(self) -> dict[str, Any]:
        return dict(self.cfg)

    def clip_spec(self) -> C.ClipSpec:
        return C.ClipSpec(frames=self.cfg["frames"], sampling_rate=2, crop_size=self.cfg["size"])

    def memory_spec(self) -> C.MemorySpec:
        return C.MemorySpec("test", self.cfg["slots"], {"slots": self.cfg["slots"]})


@register_family(FAMILY)
def _from_card(card: C.ModelCard) -> TinyMem:
    return TinyMem(**card.config)


def tinymem_preset(**overrides: Any) -> TinyMem:
    """A preset builder; tests register it with monkeypatch so that the registry stays clean."""
    torch.manual_seed(0)
    return TinyMem(**overrides)


def make_model(seed: int = 0) -> TinyMem:
    torch.manual_seed(seed)
    return TinyMem().eval()


def export(model: TinyMem, path: Path, batch: int | None = None) -> Path:
    """Export ``model`` following the contract; dynamic batch unless ``batch`` is given."""
    b = batch or 2
    args = (torch.randn(b, *model.input_shape), torch.zeros(b, dtype=torch.bool), *model.init_state(b).values())
    names = [C.FRAMES, C.RESET] + [C.state_in_name(s.name) for s in model.state_specs()]
    outs = [C.LOGITS] + [C.state_out_name(s.name) for s in model.state_specs()]
    dyn = None
    if batch is None:
        d = torch.export.Dim("batch")
        dyn = tuple({0: d} for _ in args)
    prog = torch.onnx.export(
        model, args, input_names=names, output_names=outs, dynamo=True, dynamic_shapes=dyn, verbose=False
    )
    prog.save(str(path), external_data=False)
    graph = onnx.load(str(path))
    specs = model.state_specs(batch if batch is not None else C.BATCH_DIM)
    C.write_contract(graph, specs, model.model_card(), {"precision": "f32", "by": "tests/runtime_models.py"})
    onnx.save(graph, str(path))
    return path
