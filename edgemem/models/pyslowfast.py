"""Import official PySlowFast / MeMViT configs (YAML) and checkpoints (``.pyth``).

``load_pyslowfast(config, checkpoint=None, view="train")`` reads the YAML (or an already parsed dict)
at the boundary, checked against the official schema (``pyslowfast_keys``), into typed configs (no
global mutable config), builds the model and, if given, loads the checkpoint all-or-nothing. Options
the official code would use but edgemem does not implement raise ``UnsupportedError("not supported:
KEY=VALUE")``; options that only matter for training or data loading are ignored (docs/EXPORT.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from edgemem.errors import CheckpointError, UnsupportedError
from edgemem.models.mvit import MViT
from edgemem.models.mvit_config import MemoryConfig, MViTConfig, is_official_sampler
from edgemem.models.pyslowfast_keys import Lookup, malformed_values, read_clip, read_tree
from edgemem.models.streaming import StreamingModel

# Official defaults (memvit/config/defaults.py) for every option read here.
_DEFAULTS: dict[str, Any] = {
    "MODEL.ARCH": "mvit",
    "MODEL.MODEL_NAME": "MViT",
    "MODEL.NUM_CLASSES": 400,
    "MODEL.NUM_CLASSES_LIST": [],
    "MODEL.DROPOUT_RATE": 0.5,
    "MODEL.HEAD_ACT": "softmax",
    "DETECTION.ENABLE": False,
    "MASK.ENABLE": False,
    "CONTRASTIVE.NUM_MLP_LAYERS": 1,
    "DATA.REVERSE_INPUT_CHANNEL": False,
    "MVIT.LAYER_SCALE_INIT_VALUE": 0.0,
    "MVIT.RESIDUAL_POOLING": False,
    "MVIT.USE_MEAN_POOLING": False,
    "MVIT.USE_FIXED_SINCOS_POS": False,
    "MVIT.REV.ENABLE": False,
    "DATA.NUM_FRAMES": 8,
    "DATA.SAMPLING_RATE": 8,
    "DATA.TRAIN_CROP_SIZE": 224,
    "DATA.TEST_CROP_SIZE": 256,
    "DATA.INPUT_CHANNEL_NUM": [3, 3],
    "DATA.MEAN": [0.45, 0.45, 0.45],
    "DATA.STD": [0.225, 0.225, 0.225],
    "DATA.TARGET_FPS": 30,
    "MVIT.MODE": "conv",
    "MVIT.POOL_FIRST": False,
    "MVIT.CLS_EMBED_ON": True,
    "MVIT.PATCH_KERNEL": [3, 7, 7],
    "MVIT.PATCH_STRIDE": [2, 4, 4],
    "MVIT.PATCH_PADDING": [2, 4, 4],
    "MVIT.PATCH_2D": False,
    "MVIT.EMBED_DIM": 96,
    "MVIT.NUM_HEADS": 1,
    "MVIT.MLP_RATIO": 4.0,
    "MVIT.QKV_BIAS": True,
    "MVIT.DROPPATH_RATE": 0.1,
    "MVIT.DEPTH": 16,
    "MVIT.NORM": "layernorm",
    "MVIT.DIM_MUL": [],
    "MVIT.HEAD_MUL": [],
    "MVIT.POOL_KV_STRIDE": None,
    "MVIT.POOL_KV_STRIDE_ADAPTIVE": [],
    "MVIT.POOL_Q_STRIDE": [],
    "MVIT.POOL_KVQ_KERNEL": [],
    "MVIT.NORM_STEM": False,
    "MVIT.SEP_POS_EMBED": False,
    "MVIT.DROPOUT_RATE": 0.0,
    "MVIT.DROP_ATTN_RATE": 0.0,
    "MVIT.USE_ABS_POS": True,
    "MVIT.REL_POS_SPATIAL": False,
    "MVIT.REL_POS_TEMPORAL": False,
    "MVIT.FRAME_LEVEL": False,
    "MVIT.CAUSAL": False,
    "MVIT.BOX_DEPTH": 0,
    "MVIT.CONV_Q": 0,
    "MVIT.DIM_MUL_IN_ATT": False,
    "MVIT.SEPARATE_QKV": False,
    "MEMVIT.ENABLE": False,
    "MEMVIT.ATTN_MAX_LEN": 2,
    "MEMVIT.SAMPLER": "all",
    "MEMVIT.EXCLUDE_LAYERS": [],
    "MEMVIT.COMPRESS.ENABLE": False,
    "MEMVIT.COMPRESS.POOL_KERNEL": [3, 3, 3],
    "MEMVIT.COMPRESS.POOL_STRIDE": [2, 2, 2],
}


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in (v or ()))


_NOT_BUILT = (  # MViT options of the official code edgemem does not build: (key, default, what)
    ("MASK.ENABLE", False, "masked pre-training (MASK.ENABLE)"),
    ("CONTRASTIVE.NUM_MLP_LAYERS", 1, "an MLP head (CONTRASTIVE.NUM_MLP_LAYERS)"),
    ("DATA.REVERSE_INPUT_CHANNEL", False, "BGR input (DATA.REVERSE_INPUT_CHANNEL)"),
    ("MVIT.LAYER_SCALE_INIT_VALUE", 0.0, "layer scale (MVIT.LAYER_SCALE_INIT_VALUE)"),
    ("MVIT.RESIDUAL_POOLING", False, "residual pooling (MVIT.RESIDUAL_POOLING)"),
    ("MVIT.USE_MEAN_POOLING", False, "a mean-pooled head (MVIT.USE_MEAN_POOLING)"),
    ("MVIT.USE_FIXED_SINCOS_POS", False, "fixed sin-cos positions (MVIT.USE_FIXED_SINCOS_POS)"),
    ("MVIT.REV.ENABLE", False, "reversible MViT (MVIT.REV.ENABLE)"),
)


def config_from_pyslowfast(config: str | os.PathLike[str] | Mapping[str, Any], view: str = "train") -> MViTConfig:
    """PySlowFast/MeMViT YAML (path or parsed dict) -> ``MViTConfig``.

    ``view="test"`` is accepted only where it is the same network: the MViT input is fixed to
    ``DATA.TRAIN_CROP_SIZE`` (its position tables), so ``DATA.TEST_CROP_SIZE`` must equal it.
    """
    tree, _ = read_tree(config)
    c = Lookup(tree, _DEFAULTS)
    if str(c("MODEL.ARCH")).lower() != "mvit" or c("MODEL.MODEL_NAME") != "MViT":
        raise UnsupportedError(f"not supported: MODEL.ARCH {c('MODEL.ARCH')} / MODEL_NAME {c('MODEL.MODEL_NAME')}")
    if view not in ("train", "test"):
        raise UnsupportedError(f"not supported: view {view!r} (one of ['train', 'test'])")
    if view == "test" and c("DATA.TEST_CROP_SIZE") != c("DATA.TRAIN_CROP_SIZE"):
        raise UnsupportedError(
            f"not supported: DATA.TEST_CROP_SIZE={c('DATA.TEST_CROP_SIZE')} with the test view of an MViT: its "
            f"input is fixed to DATA.TRAIN_CROP_SIZE={c('DATA.TRAIN_CROP_SIZE')} (the official MViT asserts they match)"
        )
    c.refuse_unless("MODEL.HEAD_ACT", c("MODEL.HEAD_ACT") in ("softmax", "sigmoid", "none"))
    c.refuse_unless("DATA.INPUT_CHANNEL_NUM", int(c("DATA.INPUT_CHANNEL_NUM")[0]) == 3, "RGB input")
    checks = list(_NOT_BUILT) + [
        ("DETECTION.ENABLE", False, "the AVA detection head (DETECTION.ENABLE)"),
        ("MVIT.CAUSAL", False, "causal attention (MVIT.CAUSAL)"),
        ("MVIT.PATCH_2D", False, "2D patch embedding (MVIT.PATCH_2D)"),
        ("MVIT.FRAME_LEVEL", False, "frame-level head (MVIT.FRAME_LEVEL)"),
        ("MVIT.NORM", "layernorm", "MVIT.NORM other than layernorm"),
    ]
    for key, ok, what in checks:
        c.refuse_unless(key, c(key) == ok, what)
    if c("MODEL.NUM_CLASSES_LIST"):
        raise UnsupportedError("not supported: several classification heads (MODEL.NUM_CLASSES_LIST)")
    mem = None
    if c("MEMVIT.ENABLE"):
        sampler = str(c("MEMVIT.SAMPLER"))
        c.refuse_unless("MEMVIT.SAMPLER", is_official_sampler(sampler), "the official samplers are 'all' and 'gapN'")
        mem = MemoryConfig(
            attn_max_len=int(c("MEMVIT.ATTN_MAX_LEN")),
            sampler=sampler,
            exclude_layers=_ints(c("MEMVIT.EXCLUDE_LAYERS")),
            compress=bool(c("MEMVIT.COMPRESS.ENABLE")),
            compress_kernel=_ints(c("MEMVIT.COMPRESS.POOL_KERNEL")),  # type: ignore[arg-type]
            compress_stride=_ints(c("MEMVIT.COMPRESS.POOL_STRIDE")),  # type: ignore[arg-type]
        )
    kv = c("MVIT.POOL_KV_STRIDE")
    return MViTConfig(
        clip=read_clip(c, "train"),  # the test view is refused above unless its crop is the same
        in_chans=int(c("DATA.INPUT_CHANNEL_NUM")[0]),
        num_classes=int(c("MODEL.NUM_CLASSES")),
        embed_dim=int(c("MVIT.EMBED_DIM")),
        num_heads=int(c("MVIT.NUM_HEADS")),
        depth=int(c("MVIT.DEPTH")),
        mlp_ratio=float(c("MVIT.MLP_RATIO")),
        qkv_bias=bool(c("MVIT.QKV_BIAS")),
        mode=str(c("MVIT.MODE")),
        pool_first=bool(c("MVIT.POOL_FIRST")),
        cls_embed=bool(c("MVIT.CLS_EMBED_ON")),
        patch_kernel=_ints(c("MVIT.PATCH_KERNEL")),  # type: ignore[arg-type]
        patch_stride=_ints(c("MVIT.PATCH_STRIDE")),  # type: ignore[arg-type]
        patch_padding=_ints(c("MVIT.PATCH_PADDING")),  # type: ignore[arg-type]
        dim_mul=tuple((int(i), float(m)) for i, m in c("MVIT.DIM_MUL")),
        head_mul=tuple((int(i), float(m)) for i, m in c("MVIT.HEAD_MUL")),
        pool_q_stride=tuple(_ints(e) for e in c("MVIT.POOL_Q_STRIDE")),
        pool_kv_stride=tuple(_ints(e) for e in (kv or ())),
        pool_kv_stride_adaptive=_ints(c("MVIT.POOL_KV_STRIDE_ADAPTIVE")),
        pool_kvq_kernel=_ints(c("MVIT.POOL_KVQ_KERNEL")),
        rel_pos_spatial=bool(c("MVIT.REL_POS_SPATIAL")),
        rel_pos_temporal=bool(c("MVIT.REL_POS_TEMPORAL")),
        use_abs_pos=bool(c("MVIT.USE_ABS_POS")),
        sep_pos_embed=bool(c("MVIT.SEP_POS_EMBED")),
        norm_stem=bool(c("MVIT.NORM_STEM")),
        conv_q=int(c("MVIT.CONV_Q")),
        dim_mul_in_att=bool(c("MVIT.DIM_MUL_IN_ATT")),
        drop_path_rate=float(c("MVIT.DROPPATH_RATE")),
        head_dropout=float(c("MODEL.DROPOUT_RATE")),
        memory=mem,
        head_act=str(c("MODEL.HEAD_ACT")),
        view=view,
    )


def _ignored_keys(cfg: MViTConfig, tree: Mapping[str, Any]) -> tuple[str, ...]:
    """Checkpoint key prefixes the official model holds but never uses in this configuration."""
    c = Lookup(tree, _DEFAULTS)
    ignore = []
    if int(c("MVIT.BOX_DEPTH")) > 0:
        ignore.append("box_blocks.")  # built by the official code, used by the detection head only
    for i in range(cfg.depth):
        if cfg.memory is None:
            # Memory parameters (e.g. MeMViT weights into its memory-less backbone).
            ignore += [f"blocks.{i}.attn.{n}" for n in ("rel_pos_mem_", "compress_", "norm_compress_")]
    return tuple(ignore)


def load_pyslowfast(
    config: str | os.PathLike[str] | Mapping[str, Any],
    checkpoint: str | os.PathLike[str] | None = None,
    view: str = "train",
) -> StreamingModel:
    """Build the official model described by a PySlowFast/MeMViT config; optionally load a ``.pyth``.

    ``view``: ``"train"`` takes clips at ``DATA.TRAIN_CROP_SIZE``, ``"test"`` at ``DATA.TEST_CROP_SIZE``
    (the official test-time view); the head is the official eval head in both, and the outputs are
    logits whose ``MODEL.HEAD_ACT`` (recorded in the card) gives the official eval output.

    MViT/MeMViT configs build an ``MViT``; ResNet/X3D configs a clip backbone, whose checkpoint may
    also be a Caffe2 ``.pkl`` or a PyTorchVideo-named ``.pyth`` (see ``clip_checkpoint``).

    The checkpoint is read with ``torch.load(weights_only=True)`` and loaded all-or-nothing;
    missing, unexpected and mis-shaped keys are listed in the ``CheckpointError``. Only keys the
    official model holds but never uses here (the box blocks of a detection config, memory
    parameters when MEMVIT is disabled) are skipped.
    """
    from edgemem.models.checkpoint import load_state_strict, read_pyth
    from edgemem.models.clip_checkpoint import load_clip_checkpoint
    from edgemem.models.clip_config import backbone_from_pyslowfast, is_clip_config

    tree, source = read_tree(config)
    if is_clip_config(tree):
        with malformed_values(source):
            backbone = backbone_from_pyslowfast(tree, view)
        if checkpoint is not None:
            load_clip_checkpoint(backbone, checkpoint)
        return backbone
    with malformed_values(source):
        cfg = config_from_pyslowfast(tree, view)
        model = MViT(cfg, name=None, source=source)
    if checkpoint is not None:
        ckpt = read_pyth(checkpoint)
        try:
            load_state_strict(model, ckpt["model_state"], ignore=_ignored_keys(cfg, tree))
        except CheckpointError as e:
            raise CheckpointError(f"{checkpoint}: {e}") from None
    return model
