"""Clip backbones: sizes against the PySlowFast model zoo, PySlowFast names, the empty-state contract."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgemem.contract import ClipSpec
from edgemem.errors import InputError, UnsupportedError
from edgemem.models import create_model, from_card
from edgemem.models.info import count_gflops

torch.set_num_threads(1)

# (preset, parameters in M, GFLOPs per view at the preset's size, res5 map [D, t, h, w])
# X3D: MODEL_ZOO.md (3.8 M; 0.60 / 1.96 / 4.73 GFLOPs); Slow R50 8x8: 32.5 M (CM paper Table 2c).
ZOO = [
    ("slow_r50_8x8", 32.45, 41.74, [2048, 8, 7, 7]),
    ("x3d_xs", 3.79, 0.60, [192, 4, 5, 5]),
    ("x3d_s", 3.79, 1.96, [192, 13, 5, 5]),
    ("x3d_m", 3.79, 4.73, [192, 16, 7, 7]),
]


@pytest.mark.parametrize(("name", "mparams", "gflops", "fmap"), ZOO)
def test_sizes_match_the_model_zoo(name: str, mparams: float, gflops: float, fmap: list[int]) -> None:
    with torch.device("meta"):
        m = create_model(name).eval()
    assert sum(p.numel() for p in m.parameters()) / 1e6 == pytest.approx(mparams, abs=0.01)
    frames = torch.zeros(1, *m.input_shape, device="meta")
    assert count_gflops(m, frames) == pytest.approx(gflops, abs=0.01)
    assert list(m.forward_features(frames).shape[1:]) == fmap


def test_pyslowfast_module_names() -> None:
    with torch.device("meta"):
        i3d = create_model("i3d_nln_r50_8x8").state_dict()
        x3d = create_model("x3d_m").state_dict()
        r18 = create_model("slow_tiny").state_dict()
    for key in (
        "s1.pathway0_stem.conv.weight", "s1.pathway0_stem.bn.running_var", "s2.pathway0_res0.branch1.weight",
        "s2.pathway0_res0.branch1_bn.weight", "s3.pathway0_res1.branch2.b_bn.bias", "s5.pathway0_res2.branch2.c.weight",
        "s3.pathway0_nonlocal1.conv_theta.weight", "s4.pathway0_nonlocal5.conv_out.bias",
        "s4.pathway0_nonlocal3.bn.weight", "head.projection.weight",
    ):  # fmt: skip
        assert key in i3d, key
    assert tuple(i3d["s1.pathway0_stem.conv.weight"].shape) == (64, 3, 5, 7, 7)
    assert tuple(i3d["s4.pathway0_res0.branch2.a.weight"].shape) == (256, 512, 3, 1, 1)
    assert tuple(i3d["s4.pathway0_res1.branch2.a.weight"].shape) == (256, 1024, 1, 1, 1)
    for key in (
        "s1.pathway0_stem.conv_xy.weight", "s1.pathway0_stem.conv.weight", "s2.pathway0_res0.branch2.se.fc1.bias",
        "s4.pathway0_res10.branch2.c_bn.weight", "head.conv_5.weight", "head.conv_5_bn.running_mean",
        "head.lin_5.weight", "head.projection.bias",
    ):  # fmt: skip
        assert key in x3d, key
    assert "s2.pathway0_res1.branch2.se.fc1.weight" not in x3d  # SE on every other block
    assert "s2.pathway0_res1.branch2.b.weight" in r18 and "s2.pathway0_res1.branch2.c.weight" not in r18


@pytest.mark.parametrize("name", ["slow_tiny", "x3d_xs"])
def test_memoryless_streaming_contract(name: str) -> None:
    kw = {"clip": ClipSpec(frames=4, sampling_rate=12, crop_size=32), "num_classes": 6} if name == "x3d_xs" else {}
    m = create_model(name, **kw).eval()
    assert m.state_specs(2) == [] and m.init_state(2) == {} and m.model_card().memory is None
    x = torch.randn(2, *m.input_shape)
    with torch.no_grad():
        logits, state = m.step(x, {}, torch.tensor([True, False]))
        torch.testing.assert_close(logits, m(x))
    assert state == {} and logits.shape == (2, m.num_classes)
    again = from_card(m.model_card())
    again.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), logits)
    with pytest.raises(InputError, match="frames must have shape"):
        m.step(torch.randn(2, 3, 2, 32, 32), {})


def test_frame_scale_feeds_k_times_more_frames() -> None:
    base = create_model("slow_tiny")
    scaled = create_model("slow_tiny", frame_scale=3).eval()
    assert scaled.input_shape == (3, 24, 32, 32)
    card = scaled.model_card()
    assert card.frame_scale == 3 and card.clip.frames == 24 and card.clip.sampling_rate == base.cfg.clip.sampling_rate
    scaled.load_state_dict(base.state_dict())  # same weights, longer clip
    assert scaled(torch.randn(1, 3, 24, 32, 32)).shape == (1, 10)


def test_bad_configs_are_clear_errors() -> None:
    with pytest.raises(UnsupportedError, match="depth"):
        create_model("slow_tiny", depth=34)
    with pytest.raises(UnsupportedError, match="arch"):
        create_model("slow_tiny", arch="slowfast")
    with pytest.raises(UnsupportedError, match="frame_scale"):
        create_model("x3d_xs", frame_scale=0)


def test_tiny_backbone_trains() -> None:
    torch.manual_seed(0)
    m = create_model("slow_tiny", num_classes=2).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 3, 8, 32, 32)
    y = (x[:, 0].mean(dim=(1, 2, 3)) > 0).long()
    first = None
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_pyslowfast_yaml_configs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from edgemem.models.clip_config import backbone_from_pyslowfast

    x3d_s = {
        "MODEL": {"ARCH": "x3d", "MODEL_NAME": "X3D", "NUM_CLASSES": 400},
        "DATA": {"NUM_FRAMES": 13, "SAMPLING_RATE": 6, "TRAIN_CROP_SIZE": 160, "INPUT_CHANNEL_NUM": [3]},
        "X3D": {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 2.2, "BOTTLENECK_FACTOR": 2.25, "DIM_C5": 2048},
        "RESNET": {"ZERO_INIT_FINAL_BN": True, "TRANS_FUNC": "x3d_transform"},
    }
    (tmp_path / "X3D_S.yaml").write_text(yaml.safe_dump(x3d_s))
    with torch.device("meta"):
        official_head = dataclasses.replace(create_model("x3d_s").cfg, head_pool=(13, 5, 5))
        assert backbone_from_pyslowfast(tmp_path / "X3D_S.yaml").cfg == official_head
        r101 = {
            "MODEL": {"ARCH": "slow", "MODEL_NAME": "ResNet"},
            "RESNET": {"DEPTH": 101},
            "DATA": {"INPUT_CHANNEL_NUM": [3]},
        }
        m = backbone_from_pyslowfast(r101)
        assert create_model("slow_r50_8x8").cfg.zero_init_final_bn  # as the Kinetics configs
    assert not m.cfg.zero_init_final_bn  # PySlowFast's default
    for zero in (False, True):  # RESNET.ZERO_INIT_FINAL_BN: each residual branch's final BN starts at 0
        final_bn = create_model("slow_tiny", zero_init_final_bn=zero).s5.pathway0_res0.branch2.b_bn
        assert float(final_bn.weight.abs().max()) == (0.0 if zero else 1.0)
    # PySlowFast's default NUM_BLOCK_TEMP_KERNEL: only the first 6 of res4's 23 blocks are temporal
    assert m.s4.pathway0_res5.branch2.a.kernel_size == (3, 1, 1)
    assert m.s4.pathway0_res6.branch2.a.kernel_size == (1, 1, 1)
    with pytest.raises(UnsupportedError, match="RESNET.STRIDE_1X1"):
        backbone_from_pyslowfast(
            {"MODEL": {"MODEL_NAME": "ResNet"}, "RESNET": {"STRIDE_1X1": True}, "DATA": {"INPUT_CHANNEL_NUM": [3]}}
        )
    with pytest.raises(UnsupportedError, match="SlowFast"):
        backbone_from_pyslowfast({"MODEL": {"ARCH": "slowfast", "MODEL_NAME": "SlowFast"}})
