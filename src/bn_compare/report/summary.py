"""Aggregate runs into configurations (over seeds) and BN-minus-no-BN deltas paired by seed."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bn_compare.report.results import Run
from bn_compare.report.stats import Estimate, estimate

# Keys that never define a configuration: the replicate index and paths.
NOT_CONFIG_KEYS = {"seed", "data.root"}
# Accuracies compared between the arms, with their labels.
DELTA_METRICS = (
    ("test_acc", "test accuracy"),
    ("val_acc_best", "best val accuracy"),
    ("val_acc_final", "final val accuracy"),
)


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bool):
        return (0, int(value), "")
    if isinstance(value, int | float):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def varying_keys(runs: list[Run]) -> list[str]:
    """Keys whose (known) value differs between runs, seeds and paths excluded.

    ``bn`` is always included when known. Order: ``bn`` first, then the order in which
    the keys first appear in the runs' overrides, then any other parameter.
    """
    seen: dict[str, set] = defaultdict(set)
    order: list[str] = []
    for run in runs:
        for override in run.overrides:
            key = override.partition("=")[0].lstrip("+~")
            if key not in order:
                order.append(key)
        for key, value in run.params.items():
            seen[key].add(repr(value))
            if key not in order:
                order.append(key)
    keys = [k for k in order if k not in NOT_CONFIG_KEYS and len(seen.get(k, ())) > 1]
    if "bn" not in keys and seen.get("bn"):
        keys.append("bn")  # always shown: a sweep with one arm says which one it has
    return sorted(keys, key=lambda k: k != "bn")


@dataclass
class RunMetrics:
    """What the report needs from one run, read back from its files."""

    run: Run
    val_acc_final: float | None
    val_acc_best: float | None
    test_acc: float | None
    train_loss_final: float | None
    steps_to_target: int | None
    epochs_to_target: int | None
    epoch_time_s: float | None


def run_metrics(run: Run, target_acc: float) -> RunMetrics:
    """Final and best accuracies, the final loss, time to a target and time per epoch.

    - steps to target: optimizer steps completed when ``val/acc`` was first logged at or
      above the target (the logged ``step`` column + 1); epochs: the 1-based epoch in
      which that validation happened.
    - epoch time: mean ``time/epoch`` over full epochs (a last epoch cut short by
      ``max_steps`` is left out when there are full ones).
    """
    val = run.metrics.get("val/acc")
    best = max(val.values) if val else run.final("val/acc_best")
    steps_to = epochs_to = None
    if val:
        for step, epoch, value in zip(val.steps, val.epochs, val.values, strict=True):
            if value >= target_acc:
                steps_to, epochs_to = step + 1, epoch + 1
                break
    loss = run.final("train/loss_epoch")
    if loss is None:
        loss = run.final("train/loss_step")
    return RunMetrics(
        run=run,
        val_acc_final=run.final("val/acc"),
        val_acc_best=best,
        test_acc=run.final("test/acc"),
        train_loss_final=loss,
        steps_to_target=steps_to,
        epochs_to_target=epochs_to,
        epoch_time_s=_epoch_time(run),
    )


def _epoch_time(run: Run) -> float | None:
    curve = run.metrics.get("time/epoch")
    if not curve:
        return None
    sizes = [b - a for a, b in zip([-1, *curve.steps[:-1]], curve.steps, strict=True)]
    times = curve.values
    if len(times) > 1 and sizes[-1] < max(sizes[:-1]):
        times = times[:-1]
    return math.fsum(times) / len(times)


@dataclass
class ConfigRow:
    """One configuration (the varying keys' values) aggregated over its seeds."""

    values: dict[str, Any]
    runs: list[Run]
    metrics: list[RunMetrics]  # of the ok runs
    target_acc: float

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.runs)

    def est(self, attr: str) -> Estimate:
        return estimate([getattr(m, attr) for m in self.metrics if getattr(m, attr) is not None])

    @property
    def reached(self) -> int:
        return sum(m.steps_to_target is not None for m in self.metrics)

    def to_target(self, attr: str) -> float | None:
        xs = [getattr(m, attr) for m in self.metrics if getattr(m, attr) is not None]
        return math.fsum(xs) / len(xs) if xs else None


@dataclass
class Delta:
    """BN minus no-BN for one setting of the other varying keys, paired by seed."""

    values: dict[str, Any]
    seeds: dict[str, list[int]] = field(default_factory=dict)  # metric -> paired seeds
    estimates: dict[str, Estimate] = field(default_factory=dict)
    missing: str | None = None  # why no pair exists


def configurations(runs: list[Run], keys: list[str], target_acc: float) -> list[ConfigRow]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[tuple(repr(run.params.get(k)) for k in keys)].append(run)
    rows = []
    for members in groups.values():
        values = {k: members[0].params.get(k) for k in keys}
        ok = [run_metrics(r, target_acc) for r in members if r.outcome == "ok"]
        rows.append(ConfigRow(values, members, ok, target_acc))
    rows.sort(key=lambda row: [_sort_key(row.values[k]) for k in keys])
    return rows


def _by_seed(metrics: list[RunMetrics], attr: str) -> dict[int, float]:
    """Per seed, the metric's value (the mean if a seed was run more than once)."""
    values: dict[int, list[float]] = defaultdict(list)
    for m in metrics:
        value = getattr(m, attr)
        if value is not None:
            values[m.run.params.get("seed", 0)].append(value)
    return {seed: math.fsum(v) / len(v) for seed, v in values.items()}


def paired_deltas(rows: list[ConfigRow], keys: list[str]) -> list[Delta]:
    """For every setting of the non-``bn`` keys: mean BN-minus-no-BN difference over seeds."""
    others = [k for k in keys if k != "bn"]
    groups: dict[tuple, dict[bool, ConfigRow]] = defaultdict(dict)
    order: list[tuple] = []
    for row in rows:
        group = tuple(repr(row.values.get(k)) for k in others)
        if group not in groups:
            order.append(group)
        bn = row.values.get("bn") if "bn" in keys else row.runs[0].params.get("bn")
        groups[group][bool(bn)] = row
    deltas = []
    for group in order:
        arms = groups[group]
        anyrow = next(iter(arms.values()))
        delta = Delta({k: anyrow.values.get(k) for k in others})
        for bn, label in ((True, "bn=true"), (False, "bn=false")):
            if bn not in arms:
                delta.missing = f"no {label} runs"
            elif not arms[bn].metrics:
                delta.missing = f"no {label} run finished ok"
        if delta.missing is None:
            for attr, _ in DELTA_METRICS:
                with_bn = _by_seed(arms[True].metrics, attr)
                without = _by_seed(arms[False].metrics, attr)
                seeds = sorted(set(with_bn) & set(without))
                delta.seeds[attr] = seeds
                delta.estimates[attr] = estimate([with_bn[s] - without[s] for s in seeds])
            if not delta.seeds.get("test_acc") and not delta.seeds.get("val_acc_best"):
                delta.missing = "no seed finished ok in both arms"
        deltas.append(delta)
    return deltas


def arm_status(runs: list[Run]) -> dict[bool, str | None]:
    """For each arm, None when it has ok runs, else why it is missing."""
    status: dict[bool, str | None] = {}
    for bn in (True, False):
        members = [r for r in runs if bool(r.params.get("bn")) is bn]
        if not members:
            status[bn] = f"the bn={str(bn).lower()} arm is missing entirely: no run has it"
        elif not any(r.outcome == "ok" for r in members):
            status[bn] = (
                f"the bn={str(bn).lower()} arm has no successful run "
                f"({len(members)} run(s), none finished ok)"
            )
        else:
            status[bn] = None
    return status
