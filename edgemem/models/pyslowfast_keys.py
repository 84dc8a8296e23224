"""The PySlowFast/MeMViT config schema: every key the official defaults define, and strict reading.

``KNOWN_KEYS`` is the union of the option names of PySlowFast's and MeMViT's ``config/defaults.py``
(names only: the builders in ``clip_config``/``pyslowfast`` hold the defaults of what they read).
``read_tree`` parses a YAML (or takes a parsed dict) and refuses what is not a PySlowFast config: not
a mapping, no ``MODEL`` section, or a key the official code does not define (reported with the
nearest known key). Which keys change the network, and which are read and ignored by design, is
decided per family by the builders; docs/EXPORT.md lists the ignored ones.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from edgemem import strict_yaml
from edgemem.contract import ClipSpec
from edgemem.errors import EdgememError, UnsupportedError

# Section -> leaf option names ("" holds the top-level options).
_SECTIONS: dict[str, str] = {
    "": ("DIST_BACKEND LOG_MODEL_INFO LOG_PERIOD NUM_GPUS NUM_SHARDS OUTPUT_DIR RNG_SEED SHARD_ID TASK "),
    "AUG": (
        "AA_TYPE COLOR_JITTER ENABLE GEN_MASK_LOADER INTERPOLATION MASK_FRAMES MASK_RATIO MASK_TUBE "
        "MASK_WINDOW_SIZE MAX_MASK_PATCHES_PER_BLOCK NUM_SAMPLE RE_COUNT RE_MODE RE_PROB RE_SPLIT "
    ),
    "AVA": (
        "ANNOTATION_DIR BGR DETECTION_SCORE_THRESH EXCLUSION_FILE FRAME_DIR FRAME_LIST_DIR FULL_TEST_ON_VAL "
        "GROUNDTRUTH_FILE IMG_PROC_BACKEND LABEL_MAP_FILE TEST_FORCE_FLIP TEST_LISTS TEST_PREDICT_BOX_LISTS "
        "TRAIN_GT_BOX_LISTS TRAIN_LISTS TRAIN_PCA_JITTER_ONLY TRAIN_PREDICT_BOX_LISTS "
        "TRAIN_USE_COLOR_AUGMENTATION "
    ),
    "BENCHMARK": ("LOG_PERIOD NUM_EPOCHS SHUFFLE "),
    "BN": ("GLOBAL_SYNC NORM_TYPE NUM_BATCHES_PRECISE NUM_SPLITS NUM_SYNC_DEVICES USE_PRECISE_STATS WEIGHT_DECAY "),
    "CONTRASTIVE": (
        "BN_MLP BN_SYNC_MLP DELTA_CLIPS_MAX DELTA_CLIPS_MIN DIM INTERP_MEMORY KNN_ON LENGTH LOCAL_SHUFFLE_BN "
        "MEM_TYPE MLP_DIM MOCO_MULTI_VIEW_QUEUE MOMENTUM MOMENTUM_ANNEALING NUM_CLASSES_DOWNSTREAM "
        "NUM_MLP_LAYERS PREDICTOR_DEPTHS QUEUE_LEN SEQUENTIAL SIMCLR_DIST_ON SWAV_QEUE_LEN T TYPE "
    ),
    "DATA": (
        "COLOR_RND_GRAYSCALE DECODING_BACKEND DECODING_SHORT_SIZE DUMMY_LOAD ENSEMBLE_METHOD IN22K_TRAINVAL "
        "IN22k_VAL_IN1K INPUT_CHANNEL_NUM INV_UNIFORM_SAMPLE IN_VAL_CROP_RATIO LOADER_CHUNK_OVERALL_SIZE "
        "LOADER_CHUNK_SIZE MEAN MULTI_LABEL NUM_FRAMES PATH_LABEL_SEPARATOR PATH_PREFIX PATH_TO_DATA_DIR "
        "PATH_TO_PRELOAD_IMDB PERTURB_AVA_FRAMES RANDOM_FLIP REVERSE_INPUT_CHANNEL SAMPLING_RATE SKIP_ROWS "
        "SSL_BLUR_SIGMA_MAX SSL_BLUR_SIGMA_MIN SSL_COLOR_BRI_CON_SAT SSL_COLOR_HUE SSL_COLOR_JITTER "
        "SSL_MOCOV2_AUG STD TARGET_FPS TEST_CROP_SIZE TIME_DIFF_PROB TRAIN_CROP_NUM_SPATIAL "
        "TRAIN_CROP_NUM_TEMPORAL TRAIN_CROP_SIZE TRAIN_JITTER_ASPECT_RELATIVE TRAIN_JITTER_FPS "
        "TRAIN_JITTER_MOTION_SHIFT TRAIN_JITTER_SCALES TRAIN_JITTER_SCALES_RELATIVE TRAIN_PCA_EIGVAL "
        "TRAIN_PCA_EIGVEC USE_OFFSET_SAMPLING "
    ),
    "DATA_LOADER": ("ENABLE_MULTI_THREAD_DECODE NUM_WORKERS PIN_MEMORY TEST_NUM_WORKERS "),
    "DEMO": (
        "BUFFER_SIZE CLIP_VIS_SIZE COMMON_CLASS_NAMES COMMON_CLASS_THRES DETECTRON2_CFG DETECTRON2_THRESH "
        "DETECTRON2_WEIGHTS DISPLAY_HEIGHT DISPLAY_WIDTH ENABLE FPS GT_BOXES INPUT_FORMAT INPUT_VIDEO "
        "LABEL_FILE_PATH NUM_CLIPS_SKIP NUM_VIS_INSTANCES OUTPUT_FILE OUTPUT_FPS PREDS_BOXES SLOWMO "
        "STARTING_SECOND THREAD_ENABLE UNCOMMON_CLASS_THRES VIS_MODE WEBCAM "
    ),
    "DETECTION": ("ALIGNED ENABLE ROI_XFORM_RESOLUTION SPATIAL_SCALE_FACTOR "),
    "MASK": (
        "DECODER_DEPTH DECODER_EMBED_DIM DECODER_SEP_POS_EMBED DEC_KV_KERNEL DEC_KV_STRIDE ENABLE HEAD_TYPE "
        "MAE_ON MAE_RND_MASK NORM_PRED_PIXEL PER_FRAME_MASKING PRED_HOG PRETRAIN_DEPTH SCALE_INIT_BY_DEPTH "
        "TIME_STRIDE_LOSS "
    ),
    "MEMVIT": ("ATTN_MAX_LEN ENABLE EXCLUDE_LAYERS SAMPLER "),
    "MEMVIT.COMPRESS": ("ENABLE POOL_KERNEL POOL_STRIDE "),
    "MIXUP": ("ALPHA CUTMIX_ALPHA ENABLE LABEL_SMOOTH_VALUE PROB SWITCH_PROB "),
    "MODEL": (
        "ACT_CHECKPOINT ARCH DETACH_FINAL_FC DROPCONNECT_RATE DROPOUT_RATE FC_INIT_STD FP16_ALLREDUCE "
        "FROZEN_BN HEAD_ACT LOSS_FUNC MODEL_NAME MULTI_PATHWAY_ARCH NUM_CLASSES NUM_CLASSES_LIST "
        "SINGLE_PATHWAY_ARCH "
    ),
    "MULTIGRID": (
        "BN_BASE_SIZE DEFAULT_B DEFAULT_S DEFAULT_T EPOCH_FACTOR EVAL_FREQ LONG_CYCLE LONG_CYCLE_FACTORS "
        "LONG_CYCLE_SAMPLING_RATE SHORT_CYCLE SHORT_CYCLE_FACTORS "
    ),
    "MVIT": (
        "BOX_DEPTH BOX_DROPOUT_RATE BOX_DROPPATH_RATE BOX_DROP_ATTN_RATE BOX_DROP_QKV_RATE CAUSAL "
        "CLS_EMBED_ON CONV_Q DEPTH DIM_MUL DIM_MUL_IN_ATT DROPOUT_RATE DROPPATH_RATE DROP_ATTN_RATE EMBED_DIM "
        "FRAME_LEVEL HEAD_INIT_SCALE HEAD_MUL LAYER_SCALE_INIT_VALUE MLP_RATIO MODE NORM NORM_STEM NUM_HEADS "
        "PATCH_2D PATCH_KERNEL PATCH_PADDING PATCH_STRIDE POOL_FIRST POOL_KVQ_KERNEL POOL_KV_STRIDE "
        "POOL_KV_STRIDE_ADAPTIVE POOL_Q_STRIDE QKV_BIAS REL_POS_SPATIAL REL_POS_TEMPORAL REL_POS_ZERO_INIT "
        "RESIDUAL_POOLING SEPARATE_QKV SEP_POS_EMBED USE_ABS_POS USE_FIXED_SINCOS_POS USE_MEAN_POOLING "
        "ZERO_DECAY_POS_CLS "
    ),
    "MVIT.REV": ("BUFFER_LAYERS ENABLE PRE_Q_FUSION RESPATH_FUSE RES_PATH "),
    "NONLOCAL": ("GROUP INSTANTIATION LOCATION POOL "),
    "RESNET": (
        "DEPTH INPLACE_RELU NUM_BLOCK_TEMP_KERNEL NUM_GROUPS SPATIAL_DILATIONS SPATIAL_STRIDES STRIDE_1X1 "
        "TRANS_FUNC WIDTH_PER_GROUP ZERO_INIT_FINAL_BN ZERO_INIT_FINAL_CONV "
    ),
    "SLOWFAST": ("ALPHA BETA_INV FUSION_CONV_CHANNEL_RATIO FUSION_KERNEL_SZ "),
    "SOLVER": (
        "BASE_LR BASE_LR_SCALE_NUM_SHARDS BETAS CLIP_GRAD_L2NORM CLIP_GRAD_VAL COSINE_AFTER_WARMUP "
        "COSINE_END_LR DAMPENING GAMMA LARS_ON LAYER_DECAY LRS LR_POLICY MAX_EPOCH MOMENTUM NESTEROV "
        "OPTIMIZING_METHOD STEPS STEP_SIZE WARMUP_EPOCHS WARMUP_FACTOR WARMUP_START_LR WEIGHT_DECAY "
        "ZERO_WD_1D_PARAM "
    ),
    "TENSORBOARD": ("CATEGORIES_PATH CLASS_NAMES_PATH ENABLE LOG_DIR PREDICTIONS_PATH "),
    "TENSORBOARD.CONFUSION_MATRIX": ("ENABLE FIGSIZE SUBSET_PATH "),
    "TENSORBOARD.HISTOGRAM": ("ENABLE FIGSIZE SUBSET_PATH TOPK "),
    "TENSORBOARD.MODEL_VIS": ("ACTIVATIONS COLORMAP ENABLE INPUT_VIDEO LAYER_LIST MODEL_WEIGHTS TOPK_PREDS "),
    "TENSORBOARD.MODEL_VIS.GRAD_CAM": ("COLORMAP ENABLE LAYER_LIST USE_TRUE_LABEL "),
    "TENSORBOARD.WRONG_PRED_VIS": ("ENABLE SUBSET_PATH TAG "),
    "TEST": (
        "BATCH_SIZE CHECKPOINT_FILE_PATH CHECKPOINT_TYPE DATASET DATA_LIST ENABLE FULLY_CONV_TEST "
        "NUM_ENSEMBLE_VIEWS NUM_SPATIAL_CROPS NUM_TEMPORAL_CLIPS SAVE_KINETICS_PREDS SAVE_RESULTS_PATH "
    ),
    "TRAIN": (
        "AUTO_RESUME BATCH_SIZE CHECKPOINT_CLEAR_NAME_PATTERN CHECKPOINT_EPOCH_RESET CHECKPOINT_FILE_PATH "
        "CHECKPOINT_INFLATE CHECKPOINT_IN_INIT CHECKPOINT_NO_LOAD_OPT CHECKPOINT_PERIOD CHECKPOINT_TYPE "
        "DATASET ENABLE EVAL_PERIOD KILL_LOSS_EXPLOSION_FACTOR MIXED_PRECISION TRAIN_DATA_LIST VAL_DATA_LIST "
    ),
    "VIS_MASK": ("ENABLE "),
    "X3D": ("BN_LIN5 BOTTLENECK_FACTOR CHANNELWISE_3x3x3 DEPTH_FACTOR DIM_C1 DIM_C5 SCALE_RES2 WIDTH_FACTOR "),
}
KNOWN_KEYS: frozenset[str] = frozenset(
    f"{sec}.{name}" if sec else name for sec, names in _SECTIONS.items() for name in names.split()
)
SECTIONS: frozenset[str] = frozenset(".".join(k.split(".")[:i]) for k in KNOWN_KEYS for i in range(1, k.count(".") + 1))


def _suggest(key: str) -> str:
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    pool = sorted(k for k in KNOWN_KEYS | SECTIONS if (k.rsplit(".", 1)[0] if "." in k else "") == parent)
    close = difflib.get_close_matches(key, pool, n=1, cutoff=0.6) or difflib.get_close_matches(
        key, sorted(KNOWN_KEYS | SECTIONS), n=1, cutoff=0.75
    )
    return f"; did you mean {close[0]}?" if close else ""


def check_keys(tree: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Raise ``UnsupportedError`` for the first key of ``tree`` that PySlowFast/MeMViT does not define."""
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if key == "_BASE_":
            raise UnsupportedError(f"{source}: not supported: _BASE_ (merge the base config into this file)")
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                raise UnsupportedError(f"{source}: {key} must be a section (a mapping), got {value!r}")
            check_keys(value, source, f"{key}.")
        elif key not in KNOWN_KEYS:
            raise UnsupportedError(f"{source}: unknown key {key}{_suggest(key)}")


def read_tree(config: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A PySlowFast/MeMViT YAML (path or parsed dict), checked against the schema -> ``(tree, source)``."""
    if isinstance(config, Mapping):
        tree: Any = config
        source = "config"
    else:
        p = Path(config)
        source = str(p)
        if not p.is_file():
            raise UnsupportedError(f"config not found: {p}")
        try:
            tree = strict_yaml.load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UnsupportedError(f"cannot read config {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(tree, Mapping) or not isinstance(tree.get("MODEL"), Mapping):
        what = "no MODEL section" if isinstance(tree, Mapping) else "not a mapping"
        raise UnsupportedError(f"{source} is not a PySlowFast config ({what})")
    check_keys(tree, source)
    return tree, source


def _check_type(key: str, value: Any, default: Any) -> None:
    """The value's type must be the default's, as the official config merge requires (an int is
    also accepted for a float, null for a list)."""
    if default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = value is None or isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UnsupportedError(f"{key} must be {type(default).__name__} like its default {default!r}, got {value!r}")


class Lookup:
    """Dotted lookup into a checked tree, falling back to the builder's defaults."""

    def __init__(self, tree: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        self.tree = tree
        self.defaults = defaults
        for key in defaults:  # every value the builder reads, type-checked before anything is built
            self(key)

    def __call__(self, key: str) -> Any:
        node: Any = self.tree
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return self.defaults[key]
            node = node[part]
        _check_type(key, node, self.defaults[key])
        return node

    def refuse_unless(self, key: str, ok: bool, why: str = "") -> None:
        """``not supported: KEY=VALUE`` (with ``why``) unless ``ok``."""
        if not ok:
            raise UnsupportedError(f"not supported: {key}={self(key)!r}" + (f" ({why})" if why else ""))


def read_clip(c: Lookup, view: str) -> ClipSpec:
    """The input clip (``DATA.*``) of ``view``: ``train`` at ``DATA.TRAIN_CROP_SIZE``, ``test`` at
    ``DATA.TEST_CROP_SIZE`` (the official test-time input)."""
    crop = "DATA.TEST_CROP_SIZE" if view == "test" else "DATA.TRAIN_CROP_SIZE"
    return ClipSpec(
        frames=int(c("DATA.NUM_FRAMES")),
        sampling_rate=int(c("DATA.SAMPLING_RATE")),
        crop_size=int(c(crop)),
        target_fps=int(c("DATA.TARGET_FPS")),
        mean=tuple(float(x) for x in c("DATA.MEAN")),
        std=tuple(float(x) for x in c("DATA.STD")),
    )


@contextmanager
def malformed_values(source: str) -> Iterator[None]:
    """Turn what a malformed value makes a builder raise (``int('x')``, a scalar where a nested list
    belongs, a negative width) into one ``UnsupportedError`` line naming ``source``."""
    try:
        yield
    except EdgememError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedError(f"{source}: malformed value in the config ({first})") from None
