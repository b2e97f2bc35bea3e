"""Check a composed config before anything is trained or written.

Every problem becomes one ``ConfigError`` whose message is a single readable
line; the entry point prints it and exits non-zero.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

# torch, torchvision and lightning are imported only by the checks that need them, so a
# mistyped value is reported in a fraction of a second.
BN_POSITIONS = ("before", "after")
NORMS = ("batch", "group", "layer", "instance")


class ConfigError(ValueError):
    """A config value that cannot work; the message says which and why."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive_int(cfg: DictConfig, key: str) -> int:
    value = cfg.get(key)
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{key} must be a positive whole number, got {value!r}")
    return value


def check_values(cfg: DictConfig) -> None:
    """Types and ranges of the top-level keys, the optimiser and the data options."""
    if not isinstance(cfg.get("bn"), bool):
        raise ConfigError(f"bn must be true or false, got {cfg.get('bn')!r}")
    _positive_int(cfg, "batch_size")
    _positive_int(cfg, "epochs")
    seed = cfg.get("seed")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    if cfg.get("bn_position") not in BN_POSITIONS:
        raise ConfigError(
            f"bn_position must be one of {', '.join(BN_POSITIONS)}, got {cfg.get('bn_position')!r}"
        )
    if cfg.get("norm") not in NORMS:
        raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {cfg.get('norm')!r}")

    opt = cfg.optimizer
    lr = opt.get("lr")
    if not _is_number(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr must be a number > 0, got {lr!r}")
    momentum = opt.get("momentum", 0.0)
    if not _is_number(momentum) or not 0 <= momentum < 1:
        raise ConfigError(f"optimizer.momentum must be in [0, 1), got {momentum!r}")
    wd = opt.get("weight_decay", 0.0)
    if not _is_number(wd) or wd < 0:
        raise ConfigError(f"optimizer.weight_decay must be a number >= 0, got {wd!r}")

    data = cfg.data
    for key in ("val_size", "eval_batch_size"):
        value = data.get(key)
        if not _is_int(value) or value < 1:
            raise ConfigError(f"data.{key} must be a positive whole number, got {value!r}")
    limit = data.get("limit_train")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ConfigError(
            f"data.limit_train must be a positive whole number or null, got {limit!r}"
        )


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MATMUL_PRECISIONS = ("highest", "high", "medium")


def check_perf(perf: Any) -> None:
    """The ``perf`` block: speed options that must be valid before a run starts."""
    perf = perf or {}
    threads = perf.get("num_threads")
    if threads is not None and (not _is_int(threads) or threads < 1):
        raise ConfigError(
            f"perf.num_threads must be a positive whole number or null, got {threads!r}"
        )
    precision = perf.get("matmul_precision")
    if precision is not None and precision not in MATMUL_PRECISIONS:
        raise ConfigError(
            f"perf.matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)} or null, "
            f"got {precision!r}"
        )
    mode = perf.get("compile_mode") or "default"
    if mode not in COMPILE_MODES:
        raise ConfigError(
            f"perf.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}"
        )
    for key in ("channels_last", "compile"):
        if not isinstance(perf.get(key, False), bool):
            raise ConfigError(f"perf.{key} must be true or false, got {perf.get(key)!r}")


def check_model(cfg: DictConfig, name: str | None = None) -> None:
    """The architecture builds for this arm and for the data's number of classes."""
    from bn_compare.models import SpecError, build_arm

    try:
        build_arm(cfg, name)
    except SpecError as err:
        raise ConfigError(str(err)) from None


@cache
def train_split_size(dataset: str, root: str, download: bool) -> int:
    """Make sure both splits are present (downloading if allowed) and count the training images."""
    from bn_compare.data import load_split

    _, labels = load_split(dataset, root, True, download)
    load_split(dataset, root, False, False)
    return len(labels)


def check_data(cfg: DictConfig) -> None:
    """The dataset is readable and large enough for the split and batch size asked for."""
    from bn_compare.data import DataError

    data = cfg.data
    try:
        n = train_split_size(str(data.dataset), str(Path(data.root)), bool(data.download))
    except DataError as err:
        raise ConfigError(str(err)) from None
    if data.val_size >= n:
        raise ConfigError(
            f"data.val_size must be below the {n:,}-image training split, got {data.val_size}"
        )
    train_n = n - data.val_size
    if data.get("limit_train"):
        train_n = min(train_n, data.limit_train)
    if cfg.batch_size > train_n:
        raise ConfigError(
            f"batch_size {cfg.batch_size} is larger than the {train_n:,} training images "
            f"left after the validation split"
        )


def check(cfg: DictConfig, model_name: str | None = None, data: bool = True) -> None:
    """All checks, cheapest first."""
    check_values(cfg)
    check_perf(cfg.get("perf"))
    check_model(cfg, model_name)
    if data:
        check_data(cfg)
