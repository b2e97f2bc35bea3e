"""Build a network from a layer plan, with or without normalisation layers.

A plan is a list of layers, each either a bare name (``relu``) or a one-key
mapping (``conv: {out: 32, kernel: 3}``, ``maxpool: 2``). Shapes are inferred
from the declared input, so a plan never states ``in_channels`` or
``in_features``. The same plan builds both arms of a comparison: ``bn=True``
inserts a normalisation layer after every hidden conv/linear layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}
PARAM_LAYERS = ("conv", "linear")
LAYER_TYPES = (*PARAM_LAYERS, "maxpool", "avgpool", "flatten", "dropout", *ACTIVATIONS)
LAYER_ARGS = {
    "conv": {"out", "kernel", "stride", "padding", "bn"},
    "linear": {"out", "bn"},
    "maxpool": {"kernel", "stride", "padding"},
    "avgpool": {"kernel", "stride", "padding"},
    "dropout": {"p"},
}
# Also listed in validate.py, which must not import torch.
NORMS = ("batch", "group", "layer", "instance")
BN_POSITIONS = ("before", "after")
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")


class SpecError(ValueError):
    """A model description that cannot be built; the message names the layer."""


@dataclass
class BuildOptions:
    """How to build one arm of a comparison from a plan."""

    bn: bool = False
    bn_position: str = "before"
    norm: str = "batch"
    # Which hidden layer kinds get a norm layer when ``bn`` is on.
    bn_layers: Sequence[str] = ("conv", "linear")
    # Normalise the logits too (tutorial 1 does; the default never does).
    bn_output: bool = False
    norm_groups: int = 8
    init: str = "default"
    init_bias: float | None = None
    # Seeds the per-layer initialisation, so both arms start from identical weights.
    seed: int = 0
    num_classes: int = 10
    name: str = "model"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Layer:
    index: int
    kind: str
    args: dict[str, Any]

    def where(self, name: str) -> str:
        return f"model '{name}', layer {self.index} ({self.kind})"


def parse_layer(index: int, entry: Any, name: str) -> Layer:
    """Turn one plan entry into a Layer, rejecting unknown types."""
    if isinstance(entry, str):
        kind, args = entry, {}
    elif isinstance(entry, Mapping) and len(entry) == 1:
        kind, raw = next(iter(entry.items()))
        if raw is None:
            args = {}
        elif isinstance(raw, Mapping):
            args = dict(raw)
        else:
            args = {"_": raw}
    else:
        raise SpecError(
            f"model '{name}', layer {index}: expected a layer name or a one-key mapping, "
            f"got {entry!r}"
        )
    if kind not in LAYER_TYPES:
        raise SpecError(
            f"model '{name}', layer {index}: unknown layer type '{kind}' "
            f"(known: {', '.join(LAYER_TYPES)})"
        )
    allowed = LAYER_ARGS.get(kind, set()) | {"_"}
    unknown = sorted(set(args) - allowed)
    if unknown and kind not in ACTIVATIONS:
        raise SpecError(
            f"model '{name}', layer {index} ({kind}): unknown option(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(allowed - {'_'})) or 'none'})"
        )
    return Layer(index, kind, args)


def _arg(layer: Layer, key: str, name: str, default: Any = None, required: bool = False) -> Any:
    if key in layer.args:
        return layer.args[key]
    if "_" in layer.args:
        return layer.args["_"]
    if required:
        raise SpecError(f"{layer.where(name)}: missing '{key}'")
    return default


def _pool_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _make_norm(opts: BuildOptions, kind: str, features: int, where: str) -> nn.Module:
    if opts.norm == "batch":
        return nn.BatchNorm2d(features) if kind == "conv" else nn.BatchNorm1d(features)
    if opts.norm == "layer":
        return nn.GroupNorm(1, features) if kind == "conv" else nn.LayerNorm(features)
    if opts.norm == "instance":
        if kind != "conv":
            raise SpecError(f"{where}: instance norm needs a conv layer")
        return nn.InstanceNorm2d(features, affine=True)
    groups = math.gcd(opts.norm_groups, features)
    return nn.GroupNorm(groups, features)


class Network(nn.Sequential):
    """A sequential network that remembers the input it was built for."""

    def __init__(self, layers: list[nn.Module], input_shape: tuple[int, int, int]):
        super().__init__(*layers)
        self.input_shape = input_shape


def build_network(
    layers: Sequence[Any], input_shape: tuple[int, int, int], opts: BuildOptions
) -> Network:
    """Build ``layers`` for inputs of ``input_shape`` (channels, height, width)."""
    name = opts.name
    if opts.bn_position not in BN_POSITIONS:
        raise SpecError(
            f"bn_position must be one of {', '.join(BN_POSITIONS)}, got {opts.bn_position!r}"
        )
    if opts.norm not in NORMS:
        raise SpecError(f"norm must be one of {', '.join(NORMS)}, got {opts.norm!r}")
    if opts.init not in INITS:
        raise SpecError(
            f"model '{name}': init must be one of {', '.join(INITS)}, got {opts.init!r}"
        )
    bad_kinds = [k for k in opts.bn_layers if k not in PARAM_LAYERS]
    if bad_kinds:
        raise SpecError(f"model '{name}': bn_layers may hold conv and linear only, got {bad_kinds}")
    plan = [parse_layer(i, entry, name) for i, entry in enumerate(layers)]
    param_idx = [i for i, layer in enumerate(plan) if layer.kind in PARAM_LAYERS]
    if not param_idx:
        raise SpecError(f"model '{name}': the plan has no conv or linear layer")
    output_idx = param_idx[-1]

    shape: tuple[int, ...] = tuple(input_shape)
    modules: list[nn.Module] = []
    # A norm layer waiting for the activation it follows (bn_position=after).
    pending_norm: nn.Module | None = None
    for i, layer in enumerate(plan):
        where = layer.where(name)
        module: nn.Module
        norm: nn.Module | None = None
        if layer.kind in PARAM_LAYERS:
            default_norm = (layer.kind in opts.bn_layers) if i != output_idx else opts.bn_output
            wants_norm = opts.bn and bool(layer.args.get("bn", default_norm))
            next_is_act = i + 1 < len(plan) and plan[i + 1].kind in ACTIVATIONS
            norm_first = wants_norm and (opts.bn_position == "before" or not next_is_act)
            if layer.kind == "conv":
                module, shape = _conv(layer, shape, norm_first, where, name)
            else:
                module, shape = _linear(layer, shape, norm_first, where, name)
            if wants_norm:
                norm = _make_norm(opts, layer.kind, shape[0], where)
                if not norm_first:
                    pending_norm, norm = norm, None
        elif layer.kind in ("maxpool", "avgpool"):
            module, shape = _pool(layer, shape, where, name)
        elif layer.kind == "flatten":
            module, shape = nn.Flatten(), (math.prod(shape),)
        elif layer.kind == "dropout":
            p = float(_arg(layer, "p", name, default=0.5))
            if not 0 <= p < 1:
                raise SpecError(f"{where}: p must be in [0, 1), got {p}")
            module = nn.Dropout(p) if len(shape) == 1 else nn.Dropout2d(p)
        else:
            module = _activation(layer, where)
        modules.append(module)
        if norm is not None:
            modules.append(norm)
        if layer.kind in ACTIVATIONS and pending_norm is not None:
            modules.append(pending_norm)
            pending_norm = None

    if shape != (opts.num_classes,):
        raise SpecError(
            f"model '{name}': the network ends with shape {_fmt(shape)} but the data has "
            f"{opts.num_classes} classes; make the last layer 'linear: {{out: {opts.num_classes}}}'"
        )
    net = Network(modules, tuple(input_shape))
    init_weights(net, opts.init, opts.init_bias, opts.seed)
    return net


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _conv(layer: Layer, shape, norm_first: bool, where: str, name: str):
    if len(shape) != 3:
        raise SpecError(f"{where}: needs a CxHxW input but gets {_fmt(shape)}")
    out = int(_arg(layer, "out", name, required=True))
    kernel = int(layer.args.get("kernel", 3))
    stride = int(layer.args.get("stride", 1))
    padding = int(layer.args.get("padding", 0))
    c, h, w = shape
    oh, ow = _pool_out(h, kernel, stride, padding), _pool_out(w, kernel, stride, padding)
    if out < 1 or oh < 1 or ow < 1:
        raise SpecError(
            f"{where}: kernel {kernel} (stride {stride}, padding {padding}) does not fit "
            f"the {_fmt(shape)} input (it would give {out}x{oh}x{ow})"
        )
    conv = nn.Conv2d(c, out, kernel, stride=stride, padding=padding, bias=not norm_first)
    return conv, (out, oh, ow)


def _linear(layer: Layer, shape, norm_first: bool, where: str, name: str):
    if len(shape) != 1:
        raise SpecError(
            f"{where}: needs a flat input but gets {_fmt(shape)}; add 'flatten' before it"
        )
    out = int(_arg(layer, "out", name, required=True))
    if out < 1:
        raise SpecError(f"{where}: out must be positive, got {out}")
    return nn.Linear(shape[0], out, bias=not norm_first), (out,)


def _pool(layer: Layer, shape, where: str, name: str):
    if len(shape) != 3:
        raise SpecError(f"{where}: needs a CxHxW input but gets {_fmt(shape)}")
    kernel = int(_arg(layer, "kernel", name, default=2))
    stride = int(layer.args.get("stride", kernel))
    padding = int(layer.args.get("padding", 0))
    c, h, w = shape
    oh, ow = _pool_out(h, kernel, stride, padding), _pool_out(w, kernel, stride, padding)
    if oh < 1 or ow < 1:
        raise SpecError(
            f"{where}: a {kernel}x{kernel} pool on a {_fmt(shape)} input leaves nothing; "
            "use a larger input size or fewer pools"
        )
    cls = nn.MaxPool2d if layer.kind == "maxpool" else nn.AvgPool2d
    return cls(kernel, stride=stride, padding=padding), (c, oh, ow)


def _activation(layer: Layer, where: str) -> nn.Module:
    cls = ACTIVATIONS[layer.kind]
    args = {k: v for k, v in layer.args.items() if k != "_"}
    if layer.kind == "leaky_relu" and "_" in layer.args:
        args["negative_slope"] = layer.args["_"]
    try:
        return cls(**args)
    except TypeError as err:
        raise SpecError(f"{where}: {err}") from None


def init_weights(net: nn.Module, scheme: str, bias: float | None, seed: int) -> None:
    """Initialise every conv/linear layer from a generator seeded by (seed, layer position).

    Seeding each layer on its own makes a layer's weights depend only on the seed
    and its place in the network, not on which other layers exist: the BN and
    no-BN arms of a comparison start from the same weights.
    """
    if scheme not in INITS:
        raise SpecError(f"init must be one of {', '.join(INITS)}, got {scheme!r}")
    position = 0
    for module in net.modules():
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        g = torch.Generator().manual_seed(seed * 1_000_003 + position)
        position += 1
        w = module.weight
        with torch.no_grad():
            if scheme == "default":
                # PyTorch's own reset_parameters, drawn from the layer's generator.
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(w, generator=g)
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(w, generator=g)
            elif scheme == "kaiming_uniform":
                nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=g)
            else:
                nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g)
            if module.bias is None:
                continue
            if bias is not None:
                nn.init.constant_(module.bias, bias)
            else:
                fan_in = nn.init._calculate_fan_in_and_fan_out(w)[0]
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(module.bias, -bound, bound, generator=g)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
