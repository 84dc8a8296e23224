"""The Collaborative Memory video model: clip backbone + CM at its last stage + the backbone's head.

Paths (all share one set of weights):

- ``forward(x [B, N, 3, T, H, W]) -> [B, N, classes]``: the paper's training/inference over N clips of
  each video; in training mode with ``batch_reduction`` every batch-norm batch holds one clip from each
  of the B *different* videos (the backbone runs N times; each video's clips in a random order).
- ``two_scan(x)``: multi-iteration inference (scan 1 builds the memory clip by clip, scan 2 classifies);
  ``multi_iteration_backward`` trains that way with one clip's activations alive at a time.
- ``predict_views(views [B, S, N, 3, T, H, W])``: 3 spatial x 10 temporal crops, memory from the N centre
  crops, softmax averaged.
- ``step(frames, state, reset)``: the online, causal CM for streaming; state ``cm.sum`` (sum of clip
  contributions to eq. 2) and ``cm.count`` (clips seen), so clip t reads ``M_t = mean(contrib 1..t)``.
  ``forward_causal`` is the same computation over a whole stream at once.
- ``encode`` / ``classify``: the two halves exported as the two-scan ONNX pair.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from edgemem.contract import ClipSpec, MemorySpec, ModelCard, TensorSpec, stored_card
from edgemem.errors import InputError, UnsupportedError
from edgemem.models.clip_base import ClipBackbone
from edgemem.models.cm import CollaborativeMemory
from edgemem.models.mvit import MViT
from edgemem.models.registry import create_model, from_card, register_family, register_model
from edgemem.models.streaming import State, StreamingModel

SUM = "cm.sum"
COUNT = "cm.count"
CM_OPTIONS = ("reduction", "interaction", "infusion", "token_scale", "clips", "alpha", "batch_reduction")


def _feature_dim(backbone: ClipBackbone | MViT) -> int:
    dim = getattr(backbone, "feature_dim", None)
    if dim is None:  # token backbones (MViT): the width the head projects from
        if not isinstance(backbone, MViT):
            raise UnsupportedError(f"{type(backbone).__name__} declares no feature_dim for CM")
        dim = backbone.head.projection.in_features
    return int(dim)


class CMModel(StreamingModel):
    """Backbone + CM at its last stage + the backbone's head.

    The backbone provides ``forward_features`` and ``forward_head``; a conv backbone also maps its
    feature map to tokens and back (``feature_tokens``, ``tokens_to_feature``), a token backbone
    (MViT: ``[B, 1 + K, D]``, cls token included as one more token) needs neither.
    """

    family = "cm"
    backbone: ClipBackbone | MViT

    def __init__(
        self,
        backbone: StreamingModel,
        reduction: int = 4,
        interaction: str = "associative",
        infusion: str = "gating",
        token_scale: bool = False,
        clips: int = 5,
        alpha: float = 1.0,
        batch_reduction: bool = True,
        preset: str | None = None,
    ) -> None:
        super().__init__()
        if backbone.memory_spec() is not None:
            raise UnsupportedError("CM needs a memory-less clip backbone")
        if not isinstance(backbone, (ClipBackbone, MViT)):
            raise UnsupportedError(f"CM needs a clip backbone (ClipBackbone or MViT), got {type(backbone).__name__}")
        if clips < 1:
            raise UnsupportedError(f"clips must be >= 1, got {clips}")
        self.backbone = backbone
        self.cm = CollaborativeMemory(_feature_dim(backbone), reduction, interaction, infusion, token_scale)
        self.clips = clips
        self.alpha = alpha
        self.batch_reduction = batch_reduction
        self.preset = preset

    # ------------------------------------------------------------------ contract
    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.backbone.input_shape

    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    def state_specs(self, batch_size: int | str = 1) -> list[TensorSpec]:
        return [TensorSpec(SUM, (batch_size, *self.cm.memory_shape)), TensorSpec(COUNT, (batch_size, 1))]

    def card_identity(self) -> tuple[str | None, str | None]:
        return self.preset, self.preset or "config"

    def card_config(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.model_card().to_json(),
            **{k: getattr(self, k) for k in ("clips", "alpha", "batch_reduction")},
            **{k: getattr(self.cm, k) for k in ("reduction", "interaction", "infusion", "token_scale")},
        }

    def clip_spec(self) -> ClipSpec:
        return self.backbone.clip_spec()

    def card_view(self) -> tuple[int, str, str]:
        return self.backbone.card_view()

    def memory_spec(self) -> MemorySpec:
        details = {
            "interaction": self.cm.interaction,
            "infusion": self.cm.infusion,
            "dim": self.cm.dim,
            "inner_dim": self.cm.inner_dim,
            "reduction": self.cm.reduction,
            "token_scale": self.cm.token_scale,
            "train_clips": self.clips,
            "online": "running mean of clip contributions (state cm.sum / cm.count)",
        }
        return MemorySpec("cm", None, details)

    # ------------------------------------------------------------------ building blocks
    def _check_clips(self, x: Tensor, lead: int, what: str) -> None:
        c, t, h, w = self.input_shape
        dims = ["B", "N", "S"][:lead]
        if not isinstance(x, Tensor) or x.dim() != lead + 4 or tuple(x.shape[lead:]) != (c, t, h, w):
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(f"{what} must have shape [{', '.join(dims)}, {c}, {t}, {h}, {w}], got {got}")
        if any(s == 0 for s in x.shape[:lead]):
            raise InputError(f"{what} has no clips: shape {list(x.shape)}")

    def _tokens(self, feat: Tensor) -> Tensor:
        to_tokens = getattr(self.backbone, "feature_tokens", None)
        return feat if to_tokens is None else to_tokens(feat)

    def _head(self, tokens: Tensor, feat: Tensor) -> Tensor:
        back = getattr(self.backbone, "tokens_to_feature", None)
        return self.backbone.forward_head(tokens if back is None else back(tokens, feat))

    def encode(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Scan 1 for one clip per video: ``frames [B, 3, T, H, W] -> (features, contribution)``."""
        feat = self.backbone.forward_features(frames)
        return feat, self.cm.contribution(self._tokens(feat))

    def classify(self, feat: Tensor, memory: Tensor) -> Tensor:
        """Scan 2 for one clip per video: features + memory ``[B, *memory_shape]`` -> logits ``[B, classes]``."""
        return self._head(self.cm.read(memory, self._tokens(feat)), feat)

    def _features(self, x: Tensor) -> Tensor:
        """Backbone features of ``[B, N, ...]`` clips, flattened video-major to ``[B*N, ...]``."""
        b, n = x.shape[:2]
        if self.training and self.batch_reduction and n > 1:
            # Batch reduction: each backbone call (hence each BN batch) holds one clip of each of the B
            # videos. Each video's clips are taken in its own random order, so a BN batch mixes clip
            # positions as the running statistics (used at inference) do; where a clip's content
            # depends on its position (cue clips vs distractors), a batch of one position would be
            # normalised with statistics inference never sees. The memory (a mean over clips) and
            # eq. 1 are symmetric in the clips: only which clips share a BN batch changes.
            order = torch.argsort(torch.rand(b, n, device=x.device), dim=1)
            rows = torch.arange(b, device=x.device)[:, None]
            shuffled = x[rows, order]
            feat = torch.stack([self.backbone.forward_features(shuffled[:, i]) for i in range(n)], dim=1)
            return feat[rows, torch.argsort(order, dim=1)].flatten(0, 1)  # back to each video's clip order
        return self.backbone.forward_features(x.flatten(0, 1))

    # ------------------------------------------------------------------ paper paths
    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, 3, T, H, W] -> [B, N, classes]`` clip logits ``h(X^_n)`` with the memory of all N clips.

        A single clip per video ``[B, 3, T, H, W]`` is the N = 1 case and returns ``[B, classes]``.
        """
        single = isinstance(x, Tensor) and x.dim() == 5
        if single:
            x = x.unsqueeze(1)
        self._check_clips(x, 2, "CM input")
        b, n = x.shape[:2]
        feat = self._features(x)
        tokens = self._tokens(feat)
        out = self.cm(tokens.reshape(b, n, *tokens.shape[1:])).flatten(0, 1)
        logits = self._head(out, feat).reshape(b, n, -1)
        return logits[:, 0] if single else logits

    def video_loss(self, logits: Tensor, target: Tensor, alpha: float | None = None) -> Tensor:
        """Eq. 1: ``mean_n L(h_n) + alpha * L(mean_n h_n)``; CE for class indices ``[B]``, BCE for ``[B, C]``."""
        alpha = self.alpha if alpha is None else alpha
        if logits.dim() != 3:
            raise InputError(f"video loss takes clip logits [B, N, classes], got {list(logits.shape)}")
        b, n, c = logits.shape
        if target.dim() == 1 and not target.is_floating_point():
            clip = F.cross_entropy(logits.flatten(0, 1), target.repeat_interleave(n))
            video = F.cross_entropy(logits.mean(dim=1), target)
        elif target.shape == (b, c) and target.is_floating_point():
            clip = F.binary_cross_entropy_with_logits(logits, target[:, None].expand(b, n, c))
            video = F.binary_cross_entropy_with_logits(logits.mean(dim=1), target)
        else:
            raise InputError(
                f"target must be class indices [{b}] or multi-label floats [{b}, {c}], got "
                f"{str(target.dtype).replace('torch.', '')} {list(target.shape)}"
            )
        return clip + alpha * video

    def two_scan(self, x: Tensor) -> Tensor:
        """Multi-iteration inference over ``[B, N, ...]``: memory from scan 1, then each clip; ``[B, N, classes]``."""
        self._check_clips(x, 2, "CM input")
        encoded = [self.encode(x[:, i]) for i in range(x.shape[1])]
        memory = torch.stack([c for _, c in encoded], dim=1).mean(dim=1)
        return torch.stack([self.classify(f, memory) for f, _ in encoded], dim=1)

    def multi_iteration_backward(self, x: Tensor, target: Tensor, alpha: float | None = None) -> Tensor:
        """Train by two scans, one clip's activations at a time; accumulates ``.grad``, returns the loss.

        Scan 1 (no grad) builds the memory and the logits that fix ``dL/dh_n`` (eq. 1 couples the clips
        through their mean); scan 2 re-runs each clip with grad and back-propagates that gradient. The
        memory is a constant in scan 2 (no gradient flows into other clips through it).
        """
        self._check_clips(x, 2, "CM input")
        n = x.shape[1]
        with torch.no_grad():
            encoded = [self.encode(x[:, i]) for i in range(n)]
            memory = torch.stack([c for _, c in encoded], dim=1).mean(dim=1)
            logits = torch.stack([self.classify(f, memory) for f, _ in encoded], dim=1)
        logits.requires_grad_(True)
        with torch.enable_grad():
            loss = self.video_loss(logits, target, alpha)
            (grad,) = torch.autograd.grad(loss, logits)
            for i in range(n):
                self.classify(self.backbone.forward_features(x[:, i]), memory).backward(grad[:, i])
        return loss.detach()

    def predict_views(self, views: Tensor, centre: int | None = None) -> Tensor:
        """The paper's inference: ``views [B, S, N, 3, T, H, W]`` (S spatial x N temporal crops) -> probabilities.

        The memory is the mean contribution of the N crops at spatial index ``centre`` (default S // 2) and
        is shared by all S*N crops, whose softmax scores are averaged: ``[B, classes]``.
        """
        self._check_clips(views, 3, "views")
        b, s, n = views.shape[:3]
        centre = s // 2 if centre is None else centre
        if not 0 <= centre < s:
            raise InputError(f"centre crop index {centre} out of range for {s} spatial crops")
        encoded = [[self.encode(views[:, i, j]) for j in range(n)] for i in range(s)]
        memory = torch.stack([c for _, c in encoded[centre]], dim=1).mean(dim=1)
        probs = [torch.softmax(self.classify(f, memory), dim=-1) for row in encoded for f, _ in row]
        return torch.stack(probs, dim=1).mean(dim=1)

    # ------------------------------------------------------------------ online (causal) CM
    def step(self, frames: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        """One clip per stream: add its contribution to the running sum, read the running mean."""
        self.check_step_inputs(frames, state, reset)
        total, count = state[SUM], state[COUNT]
        if reset is not None:
            total = torch.where(reset[:, None, None], torch.zeros_like(total), total)
            count = torch.where(reset[:, None], torch.zeros_like(count), count)
        feat, contrib = self.encode(frames)
        total = total + contrib
        count = count + 1.0
        logits = self.classify(feat, total / count[:, :, None])
        return logits, {SUM: total, COUNT: count}

    def forward_causal(self, x: Tensor) -> Tensor:
        """Clip t of ``[B, N, ...]`` reads the mean contribution of clips 1..t: ``[B, N, classes]``."""
        self._check_clips(x, 2, "CM input")
        b, n = x.shape[:2]
        feat, contrib = self.encode(x.flatten(0, 1))
        contrib = contrib.reshape(b, n, *contrib.shape[1:])
        seen = torch.arange(1, n + 1, dtype=contrib.dtype, device=contrib.device)
        memory = (contrib.cumsum(dim=1) / seen[None, :, None, None]).flatten(0, 1)
        return self.classify(feat, memory).reshape(b, n, -1)

    # ------------------------------------------------------------------ cost
    def overhead(self) -> dict[str, Any]:
        """CM cost vs the plain backbone: parameters and GFLOPs (multiply-adds) per clip.

        Works on the meta device (nothing allocated or computed), as ``edgemem info`` builds models.
        """
        from edgemem.models.info import count_gflops, round_sig

        was = self.training
        self.eval()
        frames = torch.zeros((1, *self.input_shape), device=self._device())
        base = count_gflops(self.backbone, frames)
        full = count_gflops(self, frames)
        self.train(was)
        bp = sum(p.numel() for p in self.backbone.parameters())
        cp = sum(p.numel() for p in self.cm.parameters())
        return {
            "backbone_params": bp,
            "cm_params": cp,
            "params": bp + cp,
            "params_ratio": round((bp + cp) / bp, 4),
            "backbone_gflops": round_sig(base),
            "gflops": round_sig(full),
            "gflops_ratio": round(full / base, 4),
        }


def _split(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if kw.get("frame_scale", 1) != 1:
        raise UnsupportedError("frame_scale applies to memory-less presets (the frame-scaled baselines), not CM")
    cm = {k: kw.pop(k) for k in CM_OPTIONS if k in kw}
    return cm, kw


def _cm(name: str, backbone: str, kw: dict[str, Any]) -> CMModel:
    cm, rest = _split(dict(kw))
    model = CMModel(create_model(backbone, **rest), preset=name, **cm)
    model.backbone_preset = backbone  # the memory-less model CM is compared with
    return model


@register_family("cm")
def _from_card(card: ModelCard) -> CMModel:
    cfg = dict(card.config)
    inner = cfg.pop("backbone")  # the backbone's own card (flat in contract-1 graphs)
    backbone = from_card(stored_card(inner))
    return CMModel(backbone, preset=card.name, **{k: cfg[k] for k in CM_OPTIONS if k in cfg})


@register_model
def cm_slow_r50_8x8(**kw: Any) -> CMModel:
    """CM (associative, gating, d/d' = 4) on Slow-only R50 8x8: 36.7 M parameters (paper Table 2c)."""
    return _cm("cm_slow_r50_8x8", "slow_r50_8x8", kw)


@register_model
def cm_x3d_s(**kw: Any) -> CMModel:
    """CM on X3D-S (res5, d = 192, d' = 48)."""
    return _cm("cm_x3d_s", "x3d_s", kw)


@register_model
def cm_mvit_tiny(**kw: Any) -> CMModel:
    """CM on the token features of ``mvit_tiny`` (d = 32, d' = 8; the cls token is one more token)."""
    return _cm("cm_mvit_tiny", "mvit_tiny", kw)


@register_model
def cm_slow_tiny(**kw: Any) -> CMModel:
    """CM on ``slow_tiny`` (d = 64, d' = 16): trains on a CPU in minutes."""
    return _cm("cm_slow_tiny", "slow_tiny", kw)
