"""Read what the runs of a sweep wrote: their result records and metrics files."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

# Top-level config keys a run is described by, read from .hydra/config.yaml.
CONFIG_KEYS = ("bn", "bn_position", "norm", "batch_size", "epochs", "seed")
# Config groups whose chosen option is a parameter (from .hydra/hydra.yaml).
CHOICE_KEYS = ("model", "data", "optimizer")


@dataclass
class Curve:
    """One metric's logged values: (step, epoch, value) in logging order."""

    steps: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def last(self) -> float | None:
        return self.values[-1] if self.values else None


def read_metrics(path: Path) -> dict[str, Curve]:
    """The columns of a Lightning ``metrics.csv``; rows are sparse, empty cells are skipped."""
    curves: dict[str, Curve] = {}
    if not path.is_file():
        return curves
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(float(row.get("step") or 0))
                epoch = int(float(row.get("epoch") or 0))
            except ValueError:
                continue
            for key, cell in row.items():
                if key in ("step", "epoch") or key is None or cell in (None, ""):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                curve = curves.setdefault(key, Curve())
                curve.steps.append(step)
                curve.epochs.append(epoch)
                curve.values.append(value)
    return curves


def _parse_value(text: str) -> Any:
    """An override's value as YAML reads it (``true`` -> True, ``64`` -> 64)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, bool | int | float | str) or value is None else text


# libyaml's loader when available: Hydra's files are read for every run of a sweep.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.load(path.read_text(), Loader=_LOADER)
    except yaml.YAMLError:
        return None


@dataclass
class Run:
    """One run directory of a sweep and how it ended."""

    path: Path
    status: str  # ok | diverged | failed | incomplete
    overrides: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def error(self) -> str:
        return str(self.result.get("error", "no result recorded (crashed or still running)"))

    @cached_property
    def params(self) -> dict[str, Any]:
        """What the run was: config values, then its overrides, then its result's params."""
        params: dict[str, Any] = {}
        config = _load_yaml(self.path / ".hydra" / "config.yaml")
        if isinstance(config, dict):
            for key in CONFIG_KEYS:
                if isinstance(config.get(key), bool | int | float | str):
                    params[key] = config[key]
            lr = (config.get("optimizer") or {}).get("lr")
            if isinstance(lr, int | float) and not isinstance(lr, bool):
                params["lr"] = lr
        recorded = self.result.get("params") or {}
        if not all(key in recorded for key in CHOICE_KEYS):  # e.g. a failed run
            hydra = _load_yaml(self.path / ".hydra" / "hydra.yaml")
            choices = ((hydra or {}).get("hydra") or {}).get("runtime", {}).get("choices") or {}
            for key in CHOICE_KEYS:
                if choices.get(key) is not None:
                    params[key] = choices[key]
        for override in self.overrides:
            key, sep, value = override.partition("=")
            key = key.lstrip("+~")
            if sep and not key.startswith("hydra."):
                params[key] = _parse_value(value)
        params.update(self.result.get("params") or {})
        return params

    @cached_property
    def metrics(self) -> dict[str, Curve]:
        return read_metrics(self.path / "metrics.csv")

    def final(self, key: str) -> float | None:
        """The last logged value of ``key`` in metrics.csv, else the result record's value."""
        curve = self.metrics.get(key)
        if curve:
            return curve.last()
        value = (self.result.get("metrics") or {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    @property
    def nonfinite_loss(self) -> bool:
        """The training loss became NaN or infinite at some logged point."""
        for key in ("train/loss_step", "train/loss_epoch"):
            curve = self.metrics.get(key)
            if curve and any(not math.isfinite(v) for v in curve.values):
                return True
        return False

    @property
    def outcome(self) -> str:
        """ok, diverged, failed or incomplete; an ok run whose loss became non-finite diverged."""
        if self.status == "ok" and self.nonfinite_loss:
            return "diverged"
        return self.status if self.status in ("ok", "diverged", "failed") else "incomplete"

    @property
    def reason(self) -> str:
        """One line on why a run is not counted as ok."""
        if self.outcome == "diverged":
            return str(self.result.get("error") or "training loss became NaN or infinite")
        return self.error


def run_dirs(sweep_dir: Path) -> list[Path]:
    """Run directories directly under a sweep directory: those Hydra wrote a config into."""
    return sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra" / "config.yaml").is_file())


def load_run(path: Path) -> Run:
    result_file = path / "result.json"
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides: list[str] = []
    if overrides_file.is_file():
        overrides = [str(o) for o in (_load_yaml(overrides_file) or [])]
    if not result_file.is_file():
        return Run(path, "incomplete", overrides)
    try:
        result = json.loads(result_file.read_text())
    except json.JSONDecodeError as err:
        return Run(path, "incomplete", overrides, {"error": f"unreadable result.json ({err})"})
    return Run(path, str(result.get("status", "incomplete")), overrides, result)


def load_runs(sweep_dir: Path) -> list[Run]:
    return [load_run(p) for p in run_dirs(sweep_dir)]


def failed_runs(sweep_dir: Path) -> list[tuple[str, str]]:
    """(run name, error line) for every run of the sweep that failed or never finished."""
    return [(r.name, r.error) for r in load_runs(sweep_dir) if r.status in ("failed", "incomplete")]
