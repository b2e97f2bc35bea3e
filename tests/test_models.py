"""Every architecture builds for both arms, with BN exactly where the plan says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from bn_compare.launch import register_resolvers
from bn_compare.models import SpecError, build_model, count_parameters

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)

register_resolvers()


def compose_cfg(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def build(cfg):
    return build_model(
        cfg.model, bn=cfg.bn, bn_position=cfg.bn_position, norm=cfg.norm, seed=cfg.seed
    )


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("bn", [True, False])
def test_every_model_composes_and_builds(name, bn):
    cfg = compose_cfg(f"model={name}", f"bn={str(bn).lower()}")
    net = build(cfg)
    has_bn = any(isinstance(m, NORM_TYPES) for m in net.modules())
    assert has_bn is bn
    x = torch.zeros(4, *net.input_shape)
    assert net(x).shape == (4, 10)
    modules = list(net.children())
    for layer, following in zip(modules, modules[1:] + [None], strict=True):
        if isinstance(layer, nn.Conv2d | nn.Linear):
            # A bias is dropped exactly where a BN layer directly follows.
            assert (layer.bias is None) == isinstance(following, NORM_TYPES)


# Parameter counts of the seed documents' networks. Without BN they are the tutorials'
# networks exactly; with BN, layers feeding BN lose their bias and BN adds 2 per feature.
SEED_COUNTS = {
    # name: (no BN, BN on every hidden layer before the activation)
    "lenet5": (61_706, 61_706 - (6 + 16 + 120 + 84) + 2 * (6 + 16 + 120 + 84)),
    "cnn": (18_378, 18_378 - 48 + 2 * 48),
    "mlp_sigmoid": (89_610, 89_610 - 200 + 2 * 200),
    "mlp_sigmoid3": (99_710, 99_710 - 300 + 2 * 300),
    "mlp": (235_146, 235_146 - 384 + 2 * 384),
    "cnn_rgb": (25_578, 25_578 - 48 + 2 * 48),
}


@pytest.mark.parametrize("name", sorted(SEED_COUNTS))
def test_parameter_counts_match_the_seed_networks(name):
    plain, normed = SEED_COUNTS[name]
    cfg = compose_cfg(f"model={name}")
    assert count_parameters(build_model(cfg.model, bn=False)) == plain
    assert count_parameters(build_model(cfg.model, bn=True)) == normed


@pytest.mark.parametrize(
    "experiment, bn_count",
    [
        # LeNet-5 article: BN2d on the two convs only, after tanh, so the convs keep biases.
        ("tutorial3_lenet5_article", 61_706 + 2 * (6 + 16)),
        # CNN lab: BN after each conv and BN1d(10) on the logits.
        ("tutorial1_cnn_lab", 18_378 - (16 + 32 + 10) + 2 * (16 + 32 + 10)),
        # Sigmoid MLP lab: BN after the sigmoid, so the linear layers keep their biases.
        ("tutorial2_sigmoid_mlp_lab", 89_610 + 2 * 200),
    ],
)
def test_tutorial_presets_build_the_tutorials_bn_networks(experiment, bn_count):
    cfg = compose_cfg(f"experiment={experiment}", "bn=true")
    assert count_parameters(build(cfg)) == bn_count


def test_bn_position_orders_layers():
    cfg = compose_cfg("model=lenet5")
    before = [type(m).__name__ for m in build_model(cfg.model, bn=True, bn_position="before")]
    after = [type(m).__name__ for m in build_model(cfg.model, bn=True, bn_position="after")]
    assert before[:4] == ["Conv2d", "BatchNorm2d", "Tanh", "AvgPool2d"]
    assert after[:4] == ["Conv2d", "Tanh", "BatchNorm2d", "AvgPool2d"]
    assert before[-4:] == ["Linear", "BatchNorm1d", "Tanh", "Linear"]
    assert after[-4:] == ["Linear", "Tanh", "BatchNorm1d", "Linear"]


def test_both_arms_start_from_the_same_weights():
    cfg = compose_cfg("model=lenet5")
    with_bn = build_model(cfg.model, bn=True, seed=3)
    without = build_model(cfg.model, bn=False, seed=3)
    other_seed = build_model(cfg.model, bn=False, seed=4)
    w = [m.weight for m in with_bn if isinstance(m, nn.Conv2d | nn.Linear)]
    v = [m.weight for m in without if isinstance(m, nn.Conv2d | nn.Linear)]
    u = [m.weight for m in other_seed if isinstance(m, nn.Conv2d | nn.Linear)]
    assert all(torch.equal(a, b) for a, b in zip(w, v, strict=True))
    assert not torch.equal(v[0], u[0])


def test_layer_opt_out_and_other_norms():
    plan = {
        "input": {"channels": 1, "size": 8},
        "layers": [
            "flatten",
            {"linear": {"out": 16, "bn": False}},
            "relu",
            {"linear": {"out": 16}},
            "relu",
            {"linear": {"out": 10}},
        ],
    }
    net = build_model(plan, bn=True)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Flatten", "Linear", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert net[1].bias is not None and net[3].bias is None
    layer_norm = build_model(plan, bn=True, norm="layer")
    assert [type(m).__name__ for m in layer_norm][4] == "LayerNorm"
    cfg = compose_cfg("model=cnn")
    group = build_model(cfg.model, bn=True, norm="group")
    assert sum(isinstance(m, nn.GroupNorm) for m in group) == 2


def test_xavier_init_with_bias_constant():
    cfg = compose_cfg("experiment=tutorial3_lenet5_article", "bn=false")
    net = build(cfg)
    for m in net:
        if isinstance(m, nn.Conv2d | nn.Linear):
            assert torch.all(m.bias == 0.01)


def _plan(*layers, size=28, channels=1):
    return {"input": {"channels": channels, "size": size}, "layers": list(layers)}


@pytest.mark.parametrize(
    "plan, message",
    [
        (_plan("flatten", "swish", {"linear": {"out": 10}}), "layer 1: unknown layer type 'swish'"),
        (
            _plan({"conv": {"out": 8, "kernel": 7}}, "flatten", {"linear": {"out": 10}}, size=4),
            "layer 0 (conv): kernel 7 (stride 1, padding 0) does not fit the 1x4x4 input",
        ),
        (
            _plan({"conv": {"out": 4, "kernel": 3}}, {"linear": {"out": 10}}),
            "layer 1 (linear): needs a flat input but gets 4x26x26; add 'flatten' before it",
        ),
        (
            _plan("flatten", {"linear": {"out": 7}}),
            "ends with shape 7 but the data has 10 classes",
        ),
        (
            _plan("maxpool", "maxpool", "maxpool", "flatten", {"linear": {"out": 10}}, size=4),
            "layer 2 (maxpool): a 2x2 pool on a 1x1x1 input leaves nothing",
        ),
        (
            {"_target_": "no_such_module.Net", "input": {"channels": 1, "size": 28}},
            "cannot import _target_ 'no_such_module.Net'",
        ),
    ],
)
def test_bad_specs_name_the_layer(plan, message):
    with pytest.raises(SpecError, match=None) as info:
        build_model(plan, bn=True, name="my_net")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_misspelt_layer_option_is_an_error():
    plan = _plan({"conv": {"out": 4, "kernal": 3}}, "flatten", {"linear": {"out": 10}})
    with pytest.raises(SpecError, match="layer 0 \\(conv\\): unknown option\\(s\\) kernal"):
        build_model(plan, bn=False)


def test_target_model_gets_the_contract_arguments():
    cfg = compose_cfg("model=resnet_small", "model.width=8")
    net = build_model(cfg.model, bn=True)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    plain = build_model(cfg.model, bn=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


def test_validation_lists_agree_with_the_builder():
    from bn_compare import validate
    from bn_compare.models import builder

    assert validate.NORMS == builder.NORMS and validate.BN_POSITIONS == builder.BN_POSITIONS
