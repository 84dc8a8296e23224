"""MViTv2 and MeMViT as streaming models with explicit, fixed-shape memory state.

State (MeMViT only; a memory-less MViT has none), for each memory block ``i`` (blocks not in
``MEMVIT.EXCLUDE_LAYERS``) and its ``S_i = memory.block_slots(i)`` (M for sampler ``all``, M*N for
``gapN``; one layout for every block unless ``memory.per_block`` gives a block its own):

- ``mem.<i>.k`` / ``mem.<i>.v``  float32 ``[B, S_i, N_mem, C_in]``: compressed K-bar / V-bar of the
  previous clips (pooled + normalised, before the k/v Linear, cls token first), slot 0 = the
  previous clip, slot j = the clip j+1 steps back.
- ``mem.valid`` float32 ``[B, max_i S_i]``: 1.0 where the slot holds a clip of the current stream
  (the same ages in every block: block i reads its first S_i entries).

``step`` attends, in every memory block, the slots of age N, 2N, ... (all slots for ``all``),
masking invalid ones out of the softmax (each batch slot behaves as an official batch-1 run),
then compresses this clip's K-bar/V-bar eagerly and shifts it into slot 0. ``reset[b]`` marks
slot b's memory invalid before the clip. Invalid slots keep stale values; only ``mem.valid``
matters.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from edgemem.contract import ClipSpec, MemorySpec, ModelCard, TensorSpec
from edgemem.models.mvit_attention import MultiScaleAttention, pool_tokens
from edgemem.models.mvit_block import MultiScaleBlock
from edgemem.models.mvit_config import MemoryConfig, MViTConfig, block_specs, memory_reach, patch_grid
from edgemem.models.registry import register_family
from edgemem.models.streaming import State, StreamingModel

VALID = "mem.valid"


class PatchEmbed(nn.Module):
    def __init__(self, cfg: MViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv3d(
            cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, stride=cfg.patch_stride, padding=cfg.patch_padding
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Head(nn.Module):
    """Classification head (``head.projection``); returns pre-softmax logits."""

    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.projection = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.dropout is not None:
            x = self.dropout(x)
        return self.projection(x)


class MViT(StreamingModel):
    """MViTv2 (``cfg.memory is None``) or MeMViT, number for number with the official code."""

    family = "mvit"

    def __init__(self, cfg: MViTConfig, *, name: str | None = None, source: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = name
        self.source = source or name
        specs = block_specs(cfg)
        self.specs = specs
        self.patch_embed = PatchEmbed(cfg)
        grid = patch_grid(cfg)
        n_patches = grid[0] * grid[1] * grid[2]
        d = cfg.embed_dim
        if cfg.cls_embed:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if cfg.use_abs_pos:
            if cfg.sep_pos_embed:
                self.pos_embed_spatial = nn.Parameter(torch.zeros(1, grid[1] * grid[2], d))
                self.pos_embed_temporal = nn.Parameter(torch.zeros(1, grid[0], d))
                if cfg.cls_embed:
                    self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, d))
            else:
                self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + int(cfg.cls_embed), d))
        self.norm_stem = nn.LayerNorm(d, eps=1e-6) if cfg.norm_stem else None
        self.blocks = nn.ModuleList(MultiScaleBlock(s, cfg) for s in specs)
        self.norm = nn.LayerNorm(specs[-1].dim_out, eps=1e-6)
        self.head = Head(specs[-1].dim_out, cfg.num_classes, cfg.head_dropout)
        self.memory_blocks: tuple[int, ...] = tuple(s.index for s in specs if s.uses_memory)
        self._init_weights()

    # ----------------------------------------------------------------- construction helpers
    def _init_weights(self) -> None:
        for name in ("cls_token", "pos_embed", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class"):
            p = getattr(self, name, None)
            if isinstance(p, nn.Parameter):
                trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if self.cfg.init_std is None:
                    nn.init.xavier_uniform_(m.weight)
                else:
                    trunc_normal_(m.weight, std=self.cfg.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------- StreamingModel API
    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.cfg.in_chans, *self.cfg.clip.shape[1:])

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def memory(self) -> MemoryConfig | None:
        return self.cfg.memory

    def memory_shape(self, block: int) -> tuple[int, int]:
        """(tokens, channels) of one compressed memory clip of ``block`` (cls included)."""
        s = self.specs[block]
        assert s.mem_thw is not None
        return s.mem_thw[0] * s.mem_thw[1] * s.mem_thw[2] + int(self.cfg.cls_embed), s.dim

    def raw_memory_shape(self, block: int) -> tuple[int, int]:
        """(tokens, channels) of one uncompressed K-bar/V-bar of ``block`` (cls included)."""
        s = self.specs[block]
        return s.kv_thw[0] * s.kv_thw[1] * s.kv_thw[2] + int(self.cfg.cls_embed), s.dim

    @property
    def valid_slots(self) -> int:
        """Length of ``mem.valid``: the most slots any memory block keeps."""
        mem = self.cfg.memory
        return max((mem.block_slots(i) for i in self.memory_blocks), default=0) if mem is not None else 0

    def state_specs(self, batch_size: int | str = 1) -> list[TensorSpec]:
        mem = self.cfg.memory
        if mem is None:
            return []
        specs = []
        for i in self.memory_blocks:
            n, c = self.memory_shape(i)
            slots = mem.block_slots(i)
            specs += [
                TensorSpec(f"mem.{i}.k", (batch_size, slots, n, c)),
                TensorSpec(f"mem.{i}.v", (batch_size, slots, n, c)),
            ]
        specs.append(TensorSpec(VALID, (batch_size, self.valid_slots)))
        return specs

    def train_state_specs(self, batch_size: int | str = 1) -> list[TensorSpec]:
        """``state_specs`` plus the raw (uncompressed) K-bar/V-bar of the previous clip,
        ``mem.<i>.k_raw`` / ``mem.<i>.v_raw`` [B, N_kv, C_in], used by ``train_step``."""
        specs = self.state_specs(batch_size)
        for i in self.memory_blocks:
            n, c = self.raw_memory_shape(i)
            specs += [
                TensorSpec(f"mem.{i}.k_raw", (batch_size, n, c)),
                TensorSpec(f"mem.{i}.v_raw", (batch_size, n, c)),
            ]
        return specs

    def init_train_state(self, batch_size: int = 1) -> State:
        dev = self._device()
        return {s.name: torch.zeros(s.concrete().shape, device=dev) for s in self.train_state_specs(batch_size)}

    def forward(self, frames: Tensor) -> Tensor:
        """Logits ``[B, classes]`` of clips ``[B, 3, T, H, W]`` with empty memory."""
        self.check_frames(frames)
        return self.forward_head(self.forward_features(frames))

    def forward_features(self, frames: Tensor) -> Tensor:
        """Tokens ``[B, 1 + T'H'W', D]`` after the final norm (cls token first when the model has
        one), with empty memory."""
        x, _ = self._backbone(frames, None)
        return self.norm(x)

    def forward_head(self, tokens: Tensor) -> Tensor:
        """Logits from normalised tokens: the cls token (or the token mean without cls)."""
        x = tokens[:, 0] if self.cfg.cls_embed else tokens.mean(1)
        return self.head(x)

    def memory_parameters(self) -> list[nn.Parameter]:
        """The parameters only the memory uses (each block's compression and memory position tables):
        MeMViT trains them at a higher learning rate (``edgemem train --memory-lr-scale``)."""
        return [p for blk in self.blocks for p in cast(MultiScaleAttention, blk.attn).memory_parameters()]

    def step(self, frames: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        """One clip per stream: ``(logits [B, classes], new state)``; eager compression (inference)."""
        self.check_step_inputs(frames, state, reset)
        if self.cfg.memory is None:
            return self.forward_head(self.norm(self._backbone(frames, None)[0])), {}
        logits, new, _ = self._memory_step(frames, state, reset, pipelined=False)
        return logits, new

    def train_step(
        self, frames: Tensor, state: State, reset: Tensor | None = None, bptt: bool = False
    ) -> tuple[Tensor, State]:
        """Training step (state from ``init_train_state``), with the official pipelined gradients or BPTT.

        Pipelined (default): the previous clip's raw K-bar/V-bar (detached) is compressed inside this
        step, so the loss of this clip trains the compression; older memory is detached. With ``gapN``
        the previous clip is never attended, so (as in the official code) compression gets no gradient.
        ``bptt``: nothing is detached; the returned memory keeps its graph, so a later clip's loss
        back-propagates into the clips the memory holds (the caller detaches the state when it steps).
        Random memory-clip dropping (``memory.mem_drop``) applies in training mode.
        """
        self.check_frames(frames)
        if self.cfg.memory is None:
            return self.forward_head(self.norm(self._backbone(frames, None)[0])), {}
        b = frames.shape[0]
        from edgemem.contract import check_state

        check_state(state, self.train_state_specs(b), batch=b)
        logits, new, raws = self._memory_step(frames, state, reset, pipelined=not bptt, detach=not bptt)
        for i in self.memory_blocks:
            new[f"mem.{i}.k_raw"] = raws[i][0] if bptt else raws[i][0].detach()
            new[f"mem.{i}.v_raw"] = raws[i][1] if bptt else raws[i][1].detach()
        return logits, new

    def card_identity(self) -> tuple[str | None, str | None]:
        return self.name, self.source

    def card_config(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def clip_spec(self) -> ClipSpec:
        return self.cfg.clip

    def card_view(self) -> tuple[int, str, str]:
        return self.cfg.frame_scale, self.cfg.head_act, self.cfg.view

    def memory_spec(self) -> MemorySpec | None:
        mem = self.cfg.memory
        if mem is None:
            return None
        ages = [mem.ages(i) for i in self.memory_blocks]
        reach = memory_reach(ages)
        farthest = max(reach, default=0)
        contiguous = next(d for d in range(1, farthest + 2) if d not in reach) - 1
        details = {
            # slots / sampler / gap: the layout of blocks without a per_block entry (MEMVIT.*);
            # attended_ages: every memory block's own (ages in clips back).
            "layers": list(self.memory_blocks),
            "slots": mem.num_attended,
            "stored_slots": self.valid_slots,
            "sampler": mem.sampler,
            "gap": mem.gap,
            "attended_ages": {str(i): list(a) for i, a in zip(self.memory_blocks, ages, strict=True)},
            "contiguous_clips": contiguous,
            "unreachable_clips": [d for d in range(1, farthest) if d not in reach],
            "compression": {
                "enabled": mem.compress,
                "kernel": list(mem.compress_kernel),
                "stride": list(mem.compress_stride),
            },
        }
        # The farthest clip whose input reaches this step's output through memory (and memory of memory):
        # the paper's support, layers x M x N for one layout in every block.
        return MemorySpec("memvit", farthest, details)

    # ----------------------------------------------------------------- internals
    def _embed(self, frames: Tensor) -> Tensor:
        x = self.patch_embed(frames)
        b = x.shape[0]
        if self.cfg.cls_embed:
            x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        if self.cfg.use_abs_pos:
            if self.cfg.sep_pos_embed:
                t, h, w = patch_grid(self.cfg)
                pos = self.pos_embed_spatial.repeat(1, t, 1) + torch.repeat_interleave(
                    self.pos_embed_temporal, h * w, dim=1
                )
                if self.cfg.cls_embed:
                    pos = torch.cat((self.pos_embed_class, pos), dim=1)
                x = x + pos
            else:
                x = x + self.pos_embed
        if self.norm_stem is not None:
            x = self.norm_stem(x)
        return x

    def _attention(self, i: int) -> MultiScaleAttention:
        block = self.blocks[i]
        if not isinstance(block, MultiScaleBlock):
            raise TypeError(f"block {i} is a {type(block).__name__}, not a MultiScaleBlock")
        return block.attn

    def _backbone(
        self, frames: Tensor, mems: dict[int, tuple[Tensor, Tensor, Tensor]] | None
    ) -> tuple[Tensor, dict[int, tuple[Tensor, Tensor]]]:
        """Blocks over one clip (``mems``: each memory block's attended K-bar, V-bar and validity);
        returns tokens (before the final norm) and each memory block's raw K-bar/V-bar."""
        x = self._embed(frames)
        raws: dict[int, tuple[Tensor, Tensor]] = {}
        for i, blk in enumerate(self.blocks):
            if mems is not None and i in mems:
                mk, mv, ok = mems[i]
                x, kr, vr = blk(x, mk, mv, ok)
                raws[i] = (kr, vr)
            else:
                x, kr, vr = blk(x)
                if i in self.memory_blocks:
                    raws[i] = (kr, vr)
        return x, raws

    def _memory_step(
        self, frames: Tensor, state: State, reset: Tensor | None, *, pipelined: bool, detach: bool = True
    ) -> tuple[Tensor, State, dict[int, tuple[Tensor, Tensor]]]:
        mem = self.cfg.memory
        cut = Tensor.detach if detach else _keep
        assert mem is not None
        valid = state[VALID]
        if reset is not None:
            valid = valid * (~reset).to(valid.dtype)[:, None]
        full: dict[int, tuple[Tensor, Tensor]] = {}
        for i in self.memory_blocks:
            k, v = state[f"mem.{i}.k"], state[f"mem.{i}.v"]
            if pipelined:
                attn = self._attention(i)
                k0 = attn.compress(state[f"mem.{i}.k_raw"], "k")[:, None]
                v0 = attn.compress(state[f"mem.{i}.v_raw"], "v")[:, None]
                k = torch.cat((k0, k[:, 1:].detach()), dim=1)
                v = torch.cat((v0, v[:, 1:].detach()), dim=1)
            full[i] = (k, v)
        # Attended memory clips oldest first, as the official concatenation order (same softmax/matmul
        # summation order). One validity (and one memory-drop draw) per layout: blocks attending the
        # same ages drop the same clips.
        oks: dict[tuple[tuple[int, ...], ...], Tensor] = {}
        mems: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        for i, (k, v) in full.items():
            windows = mem.windows(i)
            mk, mv, ok = _attended(k, v, valid, windows)
            if windows not in oks:
                if self.training and mem.mem_drop > 0:
                    ok = ok & (torch.rand(ok.shape, device=ok.device) >= mem.mem_drop)
                oks[windows] = ok
            mems[i] = (mk, mv, oks[windows])
        x, raws = self._backbone(frames, mems)
        logits = self.forward_head(self.norm(x))
        new: State = {}
        for i in self.memory_blocks:
            attn = self._attention(i)
            kr, vr = raws[i]
            k, v = full[i]
            s = mem.block_slots(i)
            kc = attn.compress(cut(kr), "k")[:, None]
            vc = attn.compress(cut(vr), "v")[:, None]
            new[f"mem.{i}.k"] = cut(torch.cat((kc, k[:, : s - 1]), dim=1))
            new[f"mem.{i}.v"] = cut(torch.cat((vc, v[:, : s - 1]), dim=1))
        s = self.valid_slots
        new[VALID] = torch.cat((valid.new_ones((valid.shape[0], 1)), valid[:, : s - 1]), dim=1)
        return logits, new, raws


def _keep(t: Tensor) -> Tensor:
    return t


def _attended(
    k: Tensor, v: Tensor, valid: Tensor, windows: tuple[tuple[int, ...], ...]
) -> tuple[Tensor, Tensor, Tensor]:
    """The memory clips a block attends, oldest first, and their validity ``[B, M]``: slot ``age - 1``
    of ``k``/``v`` ``[B, S, N, C]`` for single ages (``all``, ``gapN``), the mean over a window's valid
    slots (``winN``; a window is valid when any of its clips is)."""
    first, last, n = windows[0][0], windows[-1][-1], len(windows[0])
    if n == 1:
        sel = slice(first - 1, last, first)
        return k[:, sel].flip(1), v[:, sel].flip(1), valid[:, sel].flip(1) > 0.5
    b, _, t, c = k.shape
    w = valid[:, :last].reshape(b, len(windows), n)
    count = w.sum(2)
    scale = (w / count.clamp(min=1.0)[:, :, None])[:, :, :, None, None]

    def mean(x: Tensor) -> Tensor:
        return (x[:, :last].reshape(b, len(windows), n, t, c) * scale).sum(2).flip(1)

    return mean(k), mean(v), count.flip(1) > 0.5


@register_family("mvit")
def _from_card(card: ModelCard) -> MViT:
    return MViT(MViTConfig.from_dict(card.config), name=card.name, source=card.source)


__all__ = ["MViT", "MViTConfig", "MemoryConfig", "pool_tokens"]
