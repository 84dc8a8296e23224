"""ResNet/X3D PySlowFast configs against networks built by the unmodified official code.

tests/fixtures/pyslowfast_official (see its README): per config the YAML, the official ``.pyth`` and the
official eval-mode outputs at DATA.TRAIN_CROP_SIZE ("train") and DATA.TEST_CROP_SIZE ("test").
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from edgemem.contract import ModelCard
from edgemem.errors import UnsupportedError
from edgemem.models import load_pyslowfast

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "pyslowfast_official"
NAMES = ("slow_r18_res5s1_sigmoid", "i3d_r50_nonlocal_group2", "slow_r50_dilated_resnext_noact", "x3d_tiny_testview")
TOL = 1e-4
ACT = {"softmax": lambda y: y.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda y: y}


def _tree(name: str) -> dict[str, Any]:
    return yaml.safe_load((FIX / f"{name}.yaml").read_text())


def _official_gap(tree: dict[str, Any], name: str, view: str) -> float:
    """Largest difference between ``tree``'s model (official weights) and the official eval output."""
    z = np.load(FIX / f"{name}.npz")
    m = load_pyslowfast(tree, FIX / f"{name}.pyth", view=view).eval()
    with torch.no_grad():
        y = m(torch.from_numpy(z[f"{view}/input"]))
    return float(np.abs(ACT[m.model_card().head_act](y).numpy() - z[f"{view}/output"]).max())


@pytest.mark.parametrize("view", ["train", "test"])
@pytest.mark.parametrize("name", NAMES)
def test_official_eval_outputs(name: str, view: str) -> None:
    z = np.load(FIX / f"{name}.npz")
    m = load_pyslowfast(FIX / f"{name}.yaml", FIX / f"{name}.pyth", view=view).eval()
    card = m.model_card()
    x = torch.from_numpy(z[f"{view}/input"])
    assert tuple(x.shape[1:]) == m.input_shape and card.view == view
    assert card.clip.crop_size == _tree(name)["DATA"][f"{view.upper()}_CROP_SIZE"]
    with torch.no_grad():
        y = m(x)
    np.testing.assert_allclose(ACT[card.head_act](y).numpy(), z[f"{view}/output"], atol=TOL, rtol=0)
    proj = z[f"{view}/projection"]  # [B, t, h, w, C] at head.projection
    if proj.shape[1:4] == (1, 1, 1):  # one position: the logits are the official pre-activation scores
        np.testing.assert_allclose(y.numpy(), proj.reshape(y.shape), atol=TOL, rtol=0)


def test_head_act_is_recorded() -> None:
    assert load_pyslowfast(FIX / f"{NAMES[0]}.yaml").model_card().head_act == "sigmoid"
    assert load_pyslowfast(FIX / f"{NAMES[1]}.yaml").model_card().head_act == "softmax"


@pytest.mark.parametrize(
    "name,section,key,view",
    [
        ("slow_r18_res5s1_sigmoid", "RESNET", "SPATIAL_STRIDES", "train"),
        ("slow_r18_res5s1_sigmoid", "MODEL", "HEAD_ACT", "test"),
        ("i3d_r50_nonlocal_group2", "NONLOCAL", "GROUP", "train"),
        ("i3d_r50_nonlocal_group2", "NONLOCAL", "INSTANTIATION", "train"),
        ("slow_r50_dilated_resnext_noact", "RESNET", "SPATIAL_DILATIONS", "test"),
        ("slow_r50_dilated_resnext_noact", "MODEL", "HEAD_ACT", "test"),
    ],
)
def test_fixture_catches_an_ignored_option(name: str, section: str, key: str, view: str) -> None:
    """Building without the option (what ignoring it would do) misses the official output: the
    fixtures above would fail if these options were silently dropped."""
    assert _official_gap(_tree(name), name, view) < TOL
    tree = _tree(name)
    del tree[section][key]
    assert _official_gap(tree, name, view) > 1e-3


def test_global_pool_differs_from_the_official_test_view() -> None:
    """At TEST_CROP_SIZE a global average (the preset head) is not the official eval head."""
    name = "x3d_tiny_testview"
    z = np.load(FIX / f"{name}.npz")
    m = load_pyslowfast(FIX / f"{name}.yaml", FIX / f"{name}.pyth", view="test").eval()
    m.head.pool = None
    with torch.no_grad():
        y = m(torch.from_numpy(z["test/input"])).softmax(-1).numpy()
    assert np.abs(y - z["test/output"]).max() > 1e-3


def test_sync_batchnorm_is_batchnorm_at_inference() -> None:
    tree = _tree("x3d_tiny_testview")
    tree["BN"]["NORM_TYPE"] = "sync_batchnorm"
    assert _official_gap(tree, "x3d_tiny_testview", "test") < TOL


def test_training_only_keys_are_ignored() -> None:
    tree = _tree("i3d_r50_nonlocal_group2")
    tree |= {"SOLVER": {"BASE_LR": 1.0, "MAX_EPOCH": 3}, "TEST": {"NUM_SPATIAL_CROPS": 3}, "RNG_SEED": 5}
    tree["MODEL"] |= {"DROPOUT_RATE": 0.9, "LOSS_FUNC": "soft_cross_entropy", "FC_INIT_STD": 0.1}
    tree["DATA"] |= {"TRAIN_JITTER_SCALES": [40, 50], "DECODING_BACKEND": "pyav"}
    assert _official_gap(tree, "i3d_r50_nonlocal_group2", "train") < TOL


@pytest.mark.parametrize("case", sorted(json.loads((FIX / "official_refusals.json").read_text())))
def test_refuses_what_the_official_code_refuses(case: str) -> None:
    record = json.loads((FIX / "official_refusals.json").read_text())[case]
    assert record["official"] != "built"
    with pytest.raises(UnsupportedError, match="not supported: "):
        load_pyslowfast(record["config"])


RESNET_BASE = {
    "MODEL": {"ARCH": "slow", "MODEL_NAME": "ResNet", "NUM_CLASSES": 3},
    "RESNET": {"DEPTH": 18, "TRANS_FUNC": "basic_transform", "WIDTH_PER_GROUP": 1,
               "NUM_BLOCK_TEMP_KERNEL": [[2], [2], [2], [2]]},
    "DATA": {"NUM_FRAMES": 4, "TRAIN_CROP_SIZE": 32, "TEST_CROP_SIZE": 32, "INPUT_CHANNEL_NUM": [3]},
}  # fmt: skip
X3D_BASE = {
    "MODEL": {"ARCH": "x3d", "MODEL_NAME": "X3D", "NUM_CLASSES": 3},
    "X3D": {"DIM_C1": 8, "DIM_C5": 16},
    "RESNET": {"TRANS_FUNC": "x3d_transform"},
    "DATA": {"NUM_FRAMES": 4, "TRAIN_CROP_SIZE": 32, "TEST_CROP_SIZE": 64, "INPUT_CHANNEL_NUM": [3]},
}
MVIT_BASE = {
    "MODEL": {"ARCH": "mvit", "MODEL_NAME": "MViT", "NUM_CLASSES": 3},
    "DATA": {"NUM_FRAMES": 4, "TRAIN_CROP_SIZE": 32, "TEST_CROP_SIZE": 32},
    "MVIT": {"DEPTH": 1, "EMBED_DIM": 8, "POOL_FIRST": True, "PATCH_PADDING": [1, 3, 3]},
}


@pytest.mark.parametrize(
    "base,key,value",
    [
        (RESNET_BASE, "RESNET.STRIDE_1X1", True),
        (X3D_BASE, "RESNET.SPATIAL_DILATIONS", [[1], [1], [1], [2]]),
        (RESNET_BASE, "RESNET.SPATIAL_STRIDES", [[1], [2], [3], [2]]),
        (RESNET_BASE, "RESNET.TRANS_FUNC", "x3d_transform"),
        (RESNET_BASE, "RESNET.DEPTH", 34),
        (RESNET_BASE, "RESNET.NUM_BLOCK_TEMP_KERNEL", [[3], [4], [6], [3]]),
        (RESNET_BASE, "BN.NORM_TYPE", "sub_batchnorm"),
        (RESNET_BASE, "DATA.INPUT_CHANNEL_NUM", [1]),
        (RESNET_BASE, "DATA.INPUT_CHANNEL_NUM", [3, 3]),
        (RESNET_BASE, "DATA.REVERSE_INPUT_CHANNEL", True),
        (RESNET_BASE, "MODEL.ARCH", "slowfast"),
        (RESNET_BASE, "MODEL.ARCH", "x3d"),
        (RESNET_BASE, "MODEL.HEAD_ACT", "tanh"),
        (RESNET_BASE, "DETECTION.ENABLE", True),
        (RESNET_BASE, "CONTRASTIVE.NUM_MLP_LAYERS", 2),
        (RESNET_BASE, "NONLOCAL.GROUP", [[1], [1], [1], [3]]),  # with a res5 non-local: 4 frames / 3
        (RESNET_BASE, "NONLOCAL.POOL", [[[1, 2, 2]], [[1, 2, 2]], [[1, 2, 2]], [[2, 2, 2]]]),
        (X3D_BASE, "NONLOCAL.LOCATION", [[[1]], [[]], [[]], [[]]]),
        (X3D_BASE, "RESNET.TRANS_FUNC", "bottleneck_transform"),
        (X3D_BASE, "MODEL.ARCH", "slow"),
        (X3D_BASE, "MODEL.HEAD_ACT", "none"),
        (X3D_BASE, "X3D.CHANNELWISE_3x3x3", False),
        (X3D_BASE, "DATA.TRAIN_CROP_SIZE", 96),  # head pool larger than the map at TEST_CROP_SIZE 64
        (MVIT_BASE, "MVIT.RESIDUAL_POOLING", True),
        (MVIT_BASE, "MVIT.REV.ENABLE", True),
        (MVIT_BASE, "MASK.ENABLE", True),
        (MVIT_BASE, "DATA.INPUT_CHANNEL_NUM", [1, 1]),
        (MVIT_BASE, "MODEL.HEAD_ACT", "relu"),
    ],
)
def test_unbuilt_options_are_refused(base: dict[str, Any], key: str, value: Any) -> None:
    tree = copy.deepcopy(base)
    if key.startswith("NONLOCAL.") and key != "NONLOCAL.LOCATION":
        tree["NONLOCAL"] = {"LOCATION": [[[]], [[1]], [[]], [[0]]]}
    node = tree
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    load_pyslowfast(base)  # the base builds
    with pytest.raises(UnsupportedError, match=f"not supported: {key}"):
        load_pyslowfast(tree, view="test")


def test_mvit_test_view_needs_equal_crops() -> None:
    tree = copy.deepcopy(MVIT_BASE)
    assert load_pyslowfast(tree, view="test").model_card().view == "test"
    tree["DATA"]["TEST_CROP_SIZE"] = 64
    assert load_pyslowfast(tree).model_card().clip.crop_size == 32
    with pytest.raises(UnsupportedError, match="not supported: DATA.TEST_CROP_SIZE=64"):
        load_pyslowfast(tree, view="test")


@pytest.mark.parametrize(
    "tree,message",
    [
        ({"MODEL": {"NUM_CLASSESS": 2}}, "unknown key MODEL.NUM_CLASSESS; did you mean MODEL.NUM_CLASSES?"),
        ({"MODEL": {}, "RESNET": {"SPATIAL_STRIDE": [[1]]}}, "did you mean RESNET.SPATIAL_STRIDES?"),
        ({"MODEL": {}, "MVIT": {"REV": {"ENABL": True}}}, "did you mean MVIT.REV.ENABLE?"),
        ({"MODEL": {}, "DATA": 3}, "DATA must be a section"),
        ({"foo": "bar"}, "not a PySlowFast config"),
        ({"MODEL": {}, "_BASE_": "x.yaml"}, "not supported: _BASE_"),
    ],
)
def test_schema(tree: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedError, match=message.replace("?", r"\?")):
        load_pyslowfast(tree)


def test_caffe2_x3d_names_cover_every_parameter() -> None:
    """Caffe2 X3D blob names (conv1_xy, *_bn_fc1, conv_5, lin_5, pred) map onto every X3D parameter."""
    import re

    from edgemem.models.caffe2_import import caffe2_to_state
    from edgemem.models.clip_checkpoint import _with_bn_counters
    from edgemem.models.x3d import X3D

    tree = copy.deepcopy(X3D_BASE)
    tree["X3D"]["BN_LIN5"] = True
    model = load_pyslowfast(tree)
    assert isinstance(model, X3D)
    kind = {"weight": "w", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    rules = [
        (r"^s1\.pathway0_stem\.conv_xy$", "conv1_xy"), (r"^s1\.pathway0_stem\.conv$", "conv1"),
        (r"^s1\.pathway0_stem\.bn$", "res_conv1_bn"),
        (r"^s(\d)\.pathway0_res(\d+)\.branch2\.se\.fc(\d)$", r"res\1_\2_branch2b_bn_fc\3"),
        (r"^s(\d)\.pathway0_res(\d+)\.branch2\.(\w)(_bn)?$", r"res\1_\2_branch2\3\4"),
        (r"^s(\d)\.pathway0_res(\d+)\.branch1(_bn)?$", r"res\1_\2_branch1\3"),
        (r"^head\.(conv_5|conv_5_bn|lin_5|lin_5_bn)$", r"\1"), (r"^head\.projection$", "pred"),
    ]  # fmt: skip
    blobs = {}
    for name, t in model.state_dict().items():
        module, attr = name.rsplit(".", 1)
        if attr == "num_batches_tracked":
            continue
        blob = next(re.sub(p, r, module) for p, r in rules if re.match(p, module))
        bn = module.endswith("bn") and not module.endswith("fc")
        blobs[f"{blob}_{'s' if bn and attr == 'weight' else kind[attr]}"] = torch.randn(t.shape).numpy()
    state = caffe2_to_state(blobs)
    model.load_state_dict(_with_bn_counters(model, state), strict=True)
    np.testing.assert_array_equal(model.head.lin_5.weight.detach().numpy(), blobs["lin_5_w"])
    np.testing.assert_array_equal(
        model.s2.pathway0_res0.branch2.se.fc1.bias.detach().numpy(), blobs["res2_0_branch2b_bn_fc1_b"]
    )


def test_cli_export_test_view_matches_official(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``edgemem export CONFIG --checkpoint PYTH --view test``: the graph reproduces the official eval."""
    ort = pytest.importorskip("onnxruntime")
    from edgemem.cli import main
    from edgemem.contract import read_contract

    name = "x3d_tiny_testview"
    out = tmp_path / "x3d.onnx"
    # --atol: random weights give logits up to |55| here, where float32 sums differ by 2e-4
    argv = ["export", str(FIX / f"{name}.yaml"), "--checkpoint", str(FIX / f"{name}.pyth"), "--view", "test",
            "--out", str(out), "--clips", "2", "--boundaries", "0", "--atol", "1e-3"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    card = read_contract(str(out)).card
    assert (card.view, card.clip.crop_size, card.head_act) == ("test", 64, "softmax")
    z = np.load(FIX / f"{name}.npz")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([1], dtype=bool) for i in sess.get_inputs() if i.name != "frames"}
    logits = sess.run(None, {"frames": z["test/input"], **feeds})[0]
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(-1).numpy(), z["test/output"], atol=TOL, rtol=0)


def test_cli_config_errors_are_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from edgemem.cli import main

    cases = {
        "typo.yaml": ("MODEL:\n  NUM_CLASSESS: 2\n", "did you mean MODEL.NUM_CLASSES?"),
        "foo.yaml": ("foo: bar\n", "not a PySlowFast config"),
        "broken.yaml": ("MODEL: [1, 2\n", "cannot read config"),
        "twice.yaml": ("MODEL:\n  NUM_CLASSES: 2\n  NUM_CLASSES: 3\n", "duplicate key 'NUM_CLASSES' (line 3)"),
        "type.yaml": ("MODEL:\n  MODEL_NAME: ResNet\n  NUM_CLASSES: abc\n", "MODEL.NUM_CLASSES must be int"),
        "nested.yaml": ("MODEL:\n  MODEL_NAME: ResNet\n  ARCH: slow\nDATA:\n  INPUT_CHANNEL_NUM: [3]\n"
                        "RESNET:\n  SPATIAL_STRIDES: [[a], [2], [2], [2]]\n", "malformed value"),
        "r18.yaml": (yaml.safe_dump(json.loads((FIX / "official_refusals.json").read_text())["r34"]["config"]),
                     "not supported: RESNET.DEPTH=34"),
    }  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    for file, (text, msg) in cases.items():
        (tmp_path / file).write_text(text)
        for argv in (["export", str(tmp_path / file), "--out", str(out / "x.onnx")],
                     ["export", str(tmp_path / file), "--out", str(out / "x.onnx"), "--view", "test"]):  # fmt: skip
            rc = main(argv)
            err = capsys.readouterr().err.strip()
            assert rc == 2 and msg in err and len(err.splitlines()) == 1, (argv, err)
    assert list(out.iterdir()) == []
    rc = main(["export", "slow_tiny", "--view", "test", "--out", str(out / "x.onnx")])
    assert rc == 2 and "YAML" in capsys.readouterr().err and list(out.iterdir()) == []


def test_cli_eval_official_checkpoint_in_test_view(data, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``edgemem eval PYTH --config YAML`` scores an imported model at DATA.TEST_CROP_SIZE by default."""
    from edgemem.cli import main
    from edgemem.models.checkpoint import read_pyth, save_pyth

    name = "x3d_tiny_testview"
    tree = _tree(name)
    tree["MODEL"]["NUM_CLASSES"] = 2  # the shared dataset's classes: keep two of the official head's six
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tree))
    state = dict(read_pyth(FIX / f"{name}.pyth")["model_state"])
    state = state | {k: state[k][:2] for k in ("head.projection.weight", "head.projection.bias")}
    save_pyth(tmp_path / "c.pyth", {"model_state": state, "epoch": 1})
    base = ["eval", str(tmp_path / "c.pyth"), "--config", str(tmp_path / "c.yaml"), "--data", str(data),
            "--views", "1", "--json"]  # fmt: skip
    for argv, crop in ((base, 64), ([*base, "--view", "train"], 32)):
        assert main(argv) == 0, capsys.readouterr().err
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["videos"] == 2 and metrics["crop_size"] == crop, metrics


def test_stream_scores_follow_head_act() -> None:
    from edgemem.serve.stream import topk

    z = np.array([2.0, -1.0, 0.5])
    assert [r["index"] for r in topk(z, 3, None, "sigmoid")] == [0, 2, 1]
    np.testing.assert_allclose([r["score"] for r in topk(z, 3, None, "sigmoid")], torch.tensor(z).sigmoid()[[0, 2, 1]])
    np.testing.assert_allclose(sum(r["score"] for r in topk(z, 3, None)), 1.0)
    assert topk(z, 1, ["a", "b", "c"], "none")[0] == {"label": "a", "index": 0, "score": 2.0}


@pytest.mark.parametrize("name", NAMES)
def test_card_rebuilds_the_test_view(name: str) -> None:
    """``from_card`` (what `edgemem verify` and the runtimes' references use) rebuilds the same head."""
    from edgemem.models import from_card

    m = load_pyslowfast(FIX / f"{name}.yaml", FIX / f"{name}.pyth", view="test").eval()
    rebuilt = from_card(ModelCard.from_json(json.loads(json.dumps(m.model_card().to_json()))))
    rebuilt.load_state_dict(m.state_dict())
    x = torch.from_numpy(np.load(FIX / f"{name}.npz")["test/input"])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), m(x), atol=0, rtol=0)
