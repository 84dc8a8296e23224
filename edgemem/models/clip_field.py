"""The one ``clip: ClipSpec`` field of the model configs (ResNet3D, X3D, MViT).

``clip`` is the whole input clip: a frame-scaled baseline (``frame_scale=k``) holds the k times longer
clip, so a model, its card and its data read ``cfg.clip`` alone. ``clip_of`` reads a stored config
(a checkpoint's or a graph card's) in both forms: the nested ``clip`` object, or the flat fields
(``frames``/``num_frames``, ``sampling_rate``, ``crop_size``, ``target_fps``, ``mean``, ``std``, frames
before scaling) that configs were written with before; ``preset_config`` applies a preset's overrides.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from edgemem.contract import ClipSpec
from edgemem.errors import UnsupportedError

T = TypeVar("T")
FLAT_KEYS = ("frames", "num_frames", "sampling_rate", "crop_size", "target_fps", "mean", "std")


def check_frame_scale(clip: ClipSpec, frame_scale: int) -> None:
    """Refuse a frame scale below 1 or one that does not divide the clip's frames."""
    if frame_scale < 1:
        raise UnsupportedError(f"frame_scale must be >= 1, got {frame_scale}")
    if clip.frames % frame_scale:
        raise UnsupportedError(f"frame_scale {frame_scale} does not divide the clip's {clip.frames} frames")


def clip_of(d: dict[str, Any], default: ClipSpec) -> ClipSpec:
    """Pop the clip out of the stored config ``d``: its ``clip`` object, or the flat fields of a config
    written before (missing ones are ``default``'s, frames times ``d["frame_scale"]``)."""
    if "clip" in d:
        clip = d.pop("clip")
        if isinstance(clip, dict):  # asdict() keeps tuples where JSON has lists
            clip = {k: list(v) if isinstance(v, tuple) else v for k, v in clip.items()}
        return ClipSpec.from_json(clip, ".config.clip")
    flat = {k: d.pop(k) for k in FLAT_KEYS if k in d}
    frames = flat.pop("frames", flat.pop("num_frames", default.frames))
    flat = {k: tuple(v) if k in ("mean", "std") else v for k, v in flat.items()}
    return replace(default, frames=int(frames) * int(d.get("frame_scale", 1)), **flat)


def preset_config(cls: type[T], base: dict[str, Any], overrides: dict[str, Any], what: str) -> T:
    """A preset's config: ``base`` (its fields, ``clip`` included) updated with user ``overrides`` (any
    field of ``cls``); ``frame_scale=k`` feeds the (given or preset) clip k times more frames."""
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        hint = " (the input clip is one option: clip=ClipSpec(...))" if set(unknown) & set(FLAT_KEYS) else ""
        raise UnsupportedError(f"not supported: option(s) {unknown} for a {what} preset{hint}")
    kw = {**base, **overrides}
    scale = kw.get("frame_scale", 1)
    clip = kw.get("clip", fields["clip"].default)
    if isinstance(scale, int) and scale > 1:
        kw["clip"] = replace(clip, frames=clip.frames * scale)
    return cls(**kw)
