"""The model zoo: every architecture is a layer plan in ``conf/model/`` built here."""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from bn_compare.models.builder import (
    BuildOptions,
    SpecError,
    build_network,
    count_parameters,
    init_weights,
)

__all__ = ["SpecError", "build_arm", "build_model", "count_parameters", "input_shape"]

# Keys of a model node that describe the plan rather than being constructor arguments.
PLAN_KEYS = {
    "name",
    "input",
    "layers",
    "bn_layers",
    "bn_output",
    "init",
    "init_bias",
    "norm_groups",
}


def input_shape(model_cfg: DictConfig | dict) -> tuple[int, int, int]:
    """The (channels, height, width) a model declares under ``input``."""
    spec = model_cfg.get("input") if model_cfg is not None else None
    if spec is None:
        raise SpecError("the model config needs 'input: {channels: C, size: S}'")
    try:
        channels, size = int(spec["channels"]), int(spec["size"])
    except (KeyError, TypeError, ValueError):
        raise SpecError(
            f"the model's input must be {{channels: C, size: S}} with integers, got {spec}"
        ) from None
    if channels < 1 or size < 1:
        raise SpecError(f"the model's input channels and size must be positive, got {spec}")
    return channels, size, size


def build_model(
    model_cfg: DictConfig | dict,
    *,
    bn: bool,
    bn_position: str = "before",
    norm: str = "batch",
    num_classes: int = 10,
    seed: int = 0,
    name: str | None = None,
) -> nn.Module:
    """Build one arm (``bn`` on or off) of the architecture that ``model_cfg`` describes."""
    cfg: dict[str, Any] = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if isinstance(model_cfg, DictConfig)
        else dict(model_cfg)
    )
    name = name or cfg.get("name") or "model"
    shape = input_shape(cfg)
    if "_target_" in cfg:
        net = _build_target(cfg, name, shape, bn=bn, num_classes=num_classes)
        if "init" in cfg:
            # A class keeps its own initialisation unless the config asks for one.
            init_weights(net, str(cfg["init"]), cfg.get("init_bias"), seed)
        return net
    if "layers" not in cfg or not cfg["layers"]:
        raise SpecError(f"model '{name}': needs a 'layers' list or a '_target_' class")
    opts = BuildOptions(
        bn=bn,
        bn_position=bn_position,
        norm=norm,
        bn_layers=tuple(cfg.get("bn_layers", ("conv", "linear"))),
        bn_output=bool(cfg.get("bn_output", False)),
        norm_groups=int(cfg.get("norm_groups", 8)),
        init=str(cfg.get("init", "default")),
        init_bias=cfg.get("init_bias"),
        seed=seed,
        num_classes=num_classes,
        name=name,
    )
    return build_network(cfg["layers"], shape, opts)


def build_arm(cfg: DictConfig, name: str | None = None) -> nn.Module:
    """The network of one run: ``cfg.model`` built as its ``bn``/``bn_position``/``norm``/``seed``
    and its data's number of classes say."""
    return build_model(
        cfg.model,
        bn=cfg.bn,
        bn_position=cfg.bn_position,
        norm=cfg.norm,
        num_classes=int(cfg.data.num_classes),
        seed=cfg.seed,
        name=name,
    )


def _build_target(cfg: dict, name: str, shape, *, bn: bool, num_classes: int) -> nn.Module:
    """The escape hatch: ``_target_: pkg.module.Class`` built with the documented contract."""
    target = str(cfg["_target_"])
    module_name, _, attr = target.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise SpecError(f"model '{name}': cannot import _target_ '{target}' ({err})") from None
    kwargs = {k: v for k, v in cfg.items() if k not in PLAN_KEYS and k != "_target_"}
    try:
        net = factory(bn=bn, input_shape=shape, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise SpecError(f"model '{name}': {target}(...) rejected its arguments: {err}") from None
    net.input_shape = shape
    return net
