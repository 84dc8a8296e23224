"""The model card (``edgemem.model``), typed: clip geometry, memory, backbone, cost, classes.

Contract 2 stores ``ModelCard.to_json()``; ``ModelCard.from_json`` is strict (a missing or unknown
key, or a value of the wrong JSON type, is a StateError). ``ModelCard.from_v1`` reads the flat card
of contract 1 (no ``backbone``, no ``cost``: both come back as None; extra keys are ignored, as
contract 1 allowed them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from edgemem.contract.specs import META_MODEL
from edgemem.errors import StateError

NUM = (int, float)
Schema = dict[str, tuple[type | None, ...]]  # key -> the JSON types it may hold (None: null)
HEAD_ACTS = ("softmax", "sigmoid", "none")
VIEWS = ("train", "test")


def _fail(where: str, msg: str) -> StateError:
    return StateError(f"'{META_MODEL}'{where}: {msg}")


def _type_ok(value: Any, allowed: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in allowed
    if isinstance(value, bool):  # bool is an int in Python, never in a card
        return bool in allowed
    return any(t is not None and isinstance(value, t) for t in allowed)


def _strict(d: Any, schema: Schema, where: str) -> dict[str, Any]:
    """``d`` checked to be an object with exactly the keys of ``schema``, each of an allowed type."""
    if not isinstance(d, dict):
        raise _fail(where, f"must be a JSON object, got {type(d).__name__}")
    missing, unknown = sorted(set(schema) - set(d)), sorted(set(d) - set(schema))
    if missing or unknown:
        parts = [f"lacks {missing}"] * bool(missing) + [f"unknown keys {unknown}"] * bool(unknown)
        raise _fail(where, ", ".join(parts))
    for key, allowed in schema.items():
        if not _type_ok(d[key], allowed):
            names = " or ".join("null" if t is None else t.__name__ for t in allowed)
            raise _fail(where, f"'{key}' is {d[key]!r}, expected {names}")
    return d


@dataclass(frozen=True)
class ClipSpec:
    """What one input clip is: ``frames`` sampled every ``sampling_rate`` frames of a ``target_fps``
    video, resized and centre-cropped to ``crop_size``, RGB in [0, 1] normalised by ``mean``/``std``."""

    frames: int
    sampling_rate: int
    crop_size: int
    target_fps: float = 30.0
    mean: tuple[float, ...] = (0.45, 0.45, 0.45)
    std: tuple[float, ...] = (0.225, 0.225, 0.225)

    SCHEMA: ClassVar[Schema] = {
        "frames": (int,), "sampling_rate": (int,), "crop_size": (int,), "target_fps": NUM, "mean": (list,), "std": (list,),
    }  # fmt: skip

    @property
    def span(self) -> int:
        """Target-rate frames one clip spans."""
        return self.frames * self.sampling_rate

    @property
    def sampled_fps(self) -> float:
        """Frames per second of source time that a clip's frames are taken at."""
        return self.target_fps / self.sampling_rate

    @property
    def seconds(self) -> float:
        """Seconds of source video the clip spans."""
        return self.frames * self.sampling_rate / self.target_fps

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip."""
        return (3, self.frames, self.crop_size, self.crop_size)

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "sampling_rate": self.sampling_rate, "crop_size": self.crop_size,
                "target_fps": self.target_fps, "mean": list(self.mean), "std": list(self.std)}  # fmt: skip

    @classmethod
    def from_json(cls, d: Any, where: str = ".clip") -> ClipSpec:
        d = _strict(d, dict(cls.SCHEMA), where)
        for key in ("frames", "sampling_rate", "crop_size", "target_fps"):
            if d[key] <= 0:
                raise _fail(where, f"'{key}' must be positive, got {d[key]}")
        for key in ("mean", "std"):
            v = d[key]
            if not v or not all(_type_ok(x, NUM) for x in v):
                raise _fail(where, f"'{key}' must be a non-empty list of numbers")
        return cls(d["frames"], d["sampling_rate"], d["crop_size"], d["target_fps"],
                   tuple(float(x) for x in d["mean"]), tuple(float(x) for x in d["std"]))  # fmt: skip


@dataclass(frozen=True)
class MemorySpec:
    """The model's memory: ``kind`` (``memvit``, ``cm``), how many clips it reaches back
    (``temporal_support_clips``, None when it spans the whole video) and the kind's own fields."""

    kind: str
    temporal_support_clips: int | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "temporal_support_clips": self.temporal_support_clips, **self.details}

    @classmethod
    def from_json(cls, d: Any, where: str = ".memory", v1: bool = False) -> MemorySpec:
        if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
            raise _fail(where, "must be null or an object with a 'kind'")
        if not v1 and "temporal_support_clips" not in d:
            raise _fail(where, "lacks ['temporal_support_clips']")
        clips = d.get("temporal_support_clips")
        if clips is None and v1 and "layers" in d and "slots" in d:  # contract 1 allowed the old form
            clips = len(d["layers"]) * d["slots"]
        if not _type_ok(clips, (int, None)):
            raise _fail(where, f"'temporal_support_clips' is {clips!r}, expected int or null")
        details = {k: v for k, v in d.items() if k not in ("kind", "temporal_support_clips")}
        return cls(d["kind"], clips, details)


@dataclass(frozen=True)
class Cost:
    """What one step costs, measured at export (``edgemem info`` counts the same way): parameters,
    GFLOPs of a step with memory and of the first step (empty memory), state bytes per stream and the
    temporal support (clips; seconds of source video, None when unbounded)."""

    params: int
    gflops_step: float
    gflops_first_step: float
    state_bytes: int
    temporal_support_clips: int | None
    temporal_support_s: float | None

    SCHEMA: ClassVar[Schema] = {
        "params": (int,), "gflops_step": NUM, "gflops_first_step": NUM, "state_bytes": (int,),
        "temporal_support_clips": (int, None), "temporal_support_s": (int, float, None),
    }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Any, where: str = ".cost") -> Cost:
        return cls(**_strict(d, dict(cls.SCHEMA), where))


@dataclass(frozen=True)
class ModelCard:
    """Everything a runtime, a server or a benchmark knows about the model behind a graph.

    ``config`` is the family's own description (``edgemem.models.from_card`` rebuilds the model from
    it); ``frame_scale`` is k of a frame-scaled baseline (its ``clip.frames`` already k times longer);
    ``backbone`` names the memory-less preset a memory model is compared with (declared by the preset);
    ``head_act`` says what the logits mean (apply it for scores); ``view`` is ``train`` or ``test``.
    """

    family: str
    config: dict[str, Any]
    clip: ClipSpec
    num_classes: int
    name: str | None = None
    source: str | None = None
    class_names: tuple[str, ...] | None = None
    frame_scale: int = 1
    memory: MemorySpec | None = None
    backbone: str | None = None
    cost: Cost | None = None
    head_act: str = "softmax"
    view: str = "train"

    SCHEMA: ClassVar[Schema] = {
        "name": (str, None), "family": (str,), "source": (str, None), "config": (dict,), "clip": (dict,),
        "num_classes": (int,), "class_names": (list, None), "frame_scale": (int,), "memory": (dict, None),
        "backbone": (str, None), "cost": (dict, None), "head_act": (str,), "view": (str,),
    }  # fmt: skip

    @property
    def display_name(self) -> str:
        return self.name or self.family

    def with_(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` (e.g. ``cost``, ``class_names``)."""
        if changes.get("class_names") is not None:
            changes["class_names"] = tuple(changes["class_names"])
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "family": self.family, "source": self.source, "config": self.config,
            "clip": self.clip.to_json(), "num_classes": self.num_classes,
            "class_names": None if self.class_names is None else list(self.class_names),
            "frame_scale": self.frame_scale, "memory": None if self.memory is None else self.memory.to_json(),
            "backbone": self.backbone, "cost": None if self.cost is None else self.cost.to_json(),
            "head_act": self.head_act, "view": self.view,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Any) -> ModelCard:
        """The card of contract 2: exactly the keys of ``to_json``."""
        d = _strict(d, dict(cls.SCHEMA), "")
        return cls._build(d, ClipSpec.from_json(d["clip"]), cost=d["cost"])

    @classmethod
    def from_v1(cls, d: Any) -> ModelCard:
        """The flat card of contract 1 (clip keys at the top; no backbone, no cost)."""
        schema = {k: v for k, v in cls.SCHEMA.items() if k not in ("clip", "backbone", "cost", "head_act", "view")}
        if not isinstance(d, dict):
            raise _fail("", f"must be a JSON object, got {type(d).__name__}")
        missing = [k for k in [*schema, *ClipSpec.SCHEMA] if k not in d]
        if missing:
            raise _fail("", f"lacks {missing}")
        _strict({k: d[k] for k in schema}, schema, "")  # extra keys were allowed in contract 1
        clip = ClipSpec.from_json({k: d[k] for k in ClipSpec.SCHEMA}, "")
        v1 = {**d, "backbone": None, "head_act": d.get("head_act", "softmax"), "view": d.get("view", "train")}
        return cls._build(v1, clip, cost=None, v1=True)

    @classmethod
    def _build(cls, d: dict[str, Any], clip: ClipSpec, cost: Any, v1: bool = False) -> ModelCard:
        if d["head_act"] not in HEAD_ACTS or d["view"] not in VIEWS:
            raise _fail("", f"head_act {d['head_act']!r} / view {d['view']!r}: expected {HEAD_ACTS} / {VIEWS}")
        names = d["class_names"]
        if names is not None and (len(names) != d["num_classes"] or not all(isinstance(n, str) for n in names)):
            raise _fail("", f"'class_names' must be {d['num_classes']} strings")
        if d["num_classes"] < 1 or d["frame_scale"] < 1:
            raise _fail("", "'num_classes' and 'frame_scale' must be >= 1")
        return cls(
            family=d["family"], config=d["config"], clip=clip, num_classes=d["num_classes"], name=d["name"],
            source=d["source"], class_names=None if names is None else tuple(names), frame_scale=d["frame_scale"],
            memory=None if d["memory"] is None else MemorySpec.from_json(d["memory"], v1=v1), backbone=d["backbone"],
            cost=None if cost is None else Cost.from_json(cost), head_act=d["head_act"], view=d["view"],
        )  # fmt: skip


def parse_card(d: Any, version: str) -> ModelCard:
    """The card of a graph of contract ``version`` ("1" or "2")."""
    return ModelCard.from_v1(d) if version == "1" else ModelCard.from_json(d)


def stored_card(d: Any) -> ModelCard:
    """A card stored outside a graph (checkpoint, state file, a CM backbone's config): the contract-2
    form, or the flat contract-1 form files written before it hold."""
    return ModelCard.from_json(d) if isinstance(d, dict) and "clip" in d else ModelCard.from_v1(d)
