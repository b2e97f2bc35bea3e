"""The report's figures: BN and no-BN overlaid, mean over seeds with the min-max band shaded.

Every figure has a fixed size of ``PANEL_W x PANEL_H`` inches per panel at ``DPI``,
so its pixel size depends only on the number of panels (no tight bounding box).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bn_compare.report.results import Curve, Run  # noqa: E402
from bn_compare.report.summary import ConfigRow  # noqa: E402

PANEL_W, PANEL_H, DPI = 4.8, 3.6, 100
MAX_COLUMNS = 4
ARMS = ((False, "no BN", "tab:orange"), (True, "BN", "tab:blue"))
PERCENTILE_STYLES = (("p15", ":"), ("p50", "-"), ("p85", "--"))


def figure_size(panels: int, columns: int | None = None) -> tuple[int, int]:
    """Pixel (width, height) of a figure with ``panels`` panels."""
    cols = columns or min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / cols)
    return round(cols * PANEL_W * DPI), round(rows * PANEL_H * DPI)


def label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()) or "all runs"


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _grid(panels: int, columns: int | None = None, sharey: bool | str = False):
    cols = columns or min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(cols * PANEL_W, rows * PANEL_H),
        dpi=DPI,
        squeeze=False,
        sharey=sharey,
        layout="constrained",
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def smooth(curve: Curve, points: int = 60, keep: int = 300) -> Curve:
    """A trailing moving average leaving about ``points`` windows, thinned to ``keep`` points.

    Short curves are returned as they are.
    """
    k = max(1, len(curve) // points)
    if k == 1:
        return curve
    values, total, out = curve.values, 0.0, []
    for i, v in enumerate(values):
        total += v
        if i >= k:
            total -= values[i - k]
        out.append(total / min(i + 1, k))
    stride = max(1, len(out) // keep)
    picked = [*range(0, len(out), stride)]
    if picked[-1] != len(out) - 1:
        picked.append(len(out) - 1)
    return Curve(
        [curve.steps[i] for i in picked],
        [curve.epochs[i] for i in picked] if curve.epochs else [],
        [out[i] for i in picked],
    )


def band(curves: list[Curve], x: Callable[[Curve, int], float]):
    """x values and the mean, min and max over curves at each x (curves need not align)."""
    at: dict[float, list[float]] = defaultdict(list)
    for curve in curves:
        for i, value in enumerate(curve.values):
            if math.isfinite(value):
                at[x(curve, i)].append(value)
    xs = sorted(at)
    return (
        xs,
        [sum(at[v]) / len(at[v]) for v in xs],
        [min(at[v]) for v in xs],
        [max(at[v]) for v in xs],
    )


def panel_groups(rows: list[ConfigRow], keys: list[str]) -> list[tuple[dict, dict[bool, Any]]]:
    """(panel values, {bn: ConfigRow}) for every setting of the varying keys other than bn."""
    others = [k for k in keys if k != "bn"]
    groups: dict[tuple, tuple[dict, dict[bool, Any]]] = {}
    for row in rows:
        group = tuple(repr(row.values.get(k)) for k in others)
        values = {k: row.values.get(k) for k in others}
        bn = bool(row.values["bn"]) if "bn" in keys else bool(row.runs[0].params.get("bn"))
        groups.setdefault(group, (values, {}))[1][bn] = row
    return list(groups.values())


def _ok_runs(row: ConfigRow | None) -> list[Run]:
    return [m.run for m in row.metrics] if row is not None else []


def _curves_plot(
    path: Path,
    groups,
    metric: str,
    x: Callable[[Curve, int], float],
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = False,
    smoothing: bool = False,
) -> bool:
    if not any(
        r.metrics.get(metric) for _, arms in groups for row in arms.values() for r in _ok_runs(row)
    ):
        return False
    fig, axes = _grid(len(groups))
    for ax, (values, arms) in zip(axes, groups, strict=True):
        for bn, name, color in ARMS:
            runs = _ok_runs(arms.get(bn))
            curves = [r.metrics[metric] for r in runs if r.metrics.get(metric)]
            if smoothing and any(not all(map(math.isfinite, c.values)) for c in curves):
                smoothing = False
            curves = [smooth(c) for c in curves] if smoothing else curves
            if not curves:
                continue
            xs, mean, lo, hi = band(curves, x)
            marker = "o" if len(xs) <= 20 else None
            ax.plot(
                xs,
                mean,
                color=color,
                marker=marker,
                ms=4,
                lw=1.2,
                label=f"{name} (mean of {len(curves)})",
            )
            if len(curves) > 1:
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_title(label(values), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle(f"{title}\n(mean over seeds; shaded: min to max)", fontsize=11)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def plot_train_loss(path: Path, groups) -> bool:
    return _curves_plot(
        path,
        groups,
        "train/loss_step",
        lambda c, i: c.steps[i] + 1,
        "training step",
        "training loss (moving average)",
        "Training loss vs step",
        logy=True,
        smoothing=True,
    )


def validates_within_epochs(groups) -> bool:
    """Some run validated more than once per epoch (e.g. trainer.val_check_interval)."""
    for _, arms in groups:
        for row in arms.values():
            for run in _ok_runs(row):
                curve = run.metrics.get("val/acc")
                if curve and len(set(curve.epochs)) < len(curve.epochs):
                    return True
    return False


def plot_val_acc(path: Path, groups, by_step: bool) -> bool:
    if by_step:
        return _curves_plot(
            path,
            groups,
            "val/acc",
            lambda c, i: c.steps[i] + 1,
            "training step",
            "validation accuracy",
            "Validation accuracy vs step",
        )
    return _curves_plot(
        path,
        groups,
        "val/acc",
        lambda c, i: c.epochs[i] + 1,
        "epoch",
        "validation accuracy",
        "Validation accuracy vs epoch",
    )


def plot_acc_vs_batch_size(path: Path, rows: list[ConfigRow], keys: list[str]) -> bool:
    """Final val accuracy and test accuracy against batch size (log2 axis), one line per arm."""
    if "batch_size" not in keys:
        return False
    others = [k for k in keys if k not in ("bn", "batch_size")]
    lines: dict[tuple, dict] = {}
    for row in rows:
        bn = bool(row.values["bn"]) if "bn" in keys else bool(row.runs[0].params.get("bn"))
        key = (bn, tuple(repr(row.values.get(k)) for k in others))
        lines.setdefault(key, {"bn": bn, "values": {k: row.values.get(k) for k in others}})
        lines[key].setdefault("rows", []).append(row)
    fig, axes = _grid(2)
    panels = (("val_acc_final", "final validation accuracy"), ("test_acc", "test accuracy"))
    drew = False
    for ax, (attr, ylabel) in zip(axes, panels, strict=True):
        for line in lines.values():
            points = []
            for row in line["rows"]:
                est = row.est(attr)
                if est.mean is not None:
                    points.append((row.values["batch_size"], est.mean, est.std or 0.0, est.n))
            if not points:
                continue
            points.sort()
            name = "BN" if line["bn"] else "no BN"
            extra = label(line["values"]) if line["values"] else ""
            color = "tab:blue" if line["bn"] else "tab:orange"
            ax.errorbar(
                [p[0] for p in points],
                [p[1] for p in points],
                yerr=[p[2] for p in points],
                marker="o",
                capsize=3,
                label=f"{name} {extra}".strip(),
                color=color if not others else None,
            )
            drew = True
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (log2 scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel.capitalize()} vs batch size", fontsize=10)
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle("Accuracy vs batch size\n(mean over seeds; bars: ±1 std)", fontsize=11)
    if drew:
        fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return drew


def activation_scalars(run: Run) -> dict[str, list[tuple[int, float]]]:
    """The ``activations/...`` scalars of a run, read from its TensorBoard event files."""
    if not _activations_enabled(run.path) or not any(run.path.glob("events.out.tfevents.*")):
        return {}  # nothing to find: skip reading the event files
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.path), size_guidance={"scalars": 0})
    events.Reload()
    tags = [t for t in events.Tags().get("scalars", []) if t.startswith("activations/")]
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags}


def _activations_enabled(run_dir: Path) -> bool:
    """False only when the run's config says activation statistics were off."""
    from bn_compare.report.results import _load_yaml

    config = _load_yaml(run_dir / ".hydra" / "config.yaml")
    if not isinstance(config, dict):
        return True
    return bool((config.get("activations") or {}).get("enabled", True))


def activation_prefix(tags: set[str]) -> str | None:
    """The tag prefix to plot: one unit of the last hidden layer if logged, else that layer."""
    units = sorted({t.rsplit("/", 1)[0] for t in tags if "/unit" in t})
    if units:
        return units[-1]
    layers = sorted({t.rsplit("/", 1)[0] for t in tags}, key=_layer_order)
    return layers[-1] if layers else None


def _layer_order(prefix: str) -> tuple[int, str]:
    name = prefix.split("/")[1] if "/" in prefix else prefix
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 0, prefix)


def plot_activations(path: Path, groups) -> str | None:
    """Percentiles of the last hidden layer's pre-activations over steps, no BN | BN.

    Returns the tag prefix plotted, or None when no run logged activation scalars.
    """
    scalars: dict[Path, dict] = {}
    for _, arms in groups:
        for row in arms.values():
            for run in _ok_runs(row):
                found = activation_scalars(run)
                if found:
                    scalars[run.path] = found
    if not scalars:
        return None
    prefix = activation_prefix({t for found in scalars.values() for t in found})
    if prefix is None:
        return None
    fig, axes = _grid(2 * len(groups), columns=2, sharey="row")
    for g, (values, arms) in enumerate(groups):
        for a, (bn, name, _) in enumerate(ARMS):
            ax = axes[2 * g + a]
            runs = [r for r in _ok_runs(arms.get(bn)) if r.path in scalars]
            for pct, style in PERCENTILE_STYLES:
                curves = []
                for run in runs:
                    points = scalars[run.path].get(f"{prefix}/{pct}", [])
                    curves.append(Curve([s for s, _ in points], [], [v for _, v in points]))
                curves = [c for c in curves if len(c)]
                if not curves:
                    continue
                xs, mean, lo, hi = band(curves, lambda c, i: c.steps[i])
                ax.plot(xs, mean, style, color="black", lw=1.1, label=pct)
                if len(curves) > 1:
                    ax.fill_between(xs, lo, hi, color="grey", alpha=0.25, lw=0)
            ax.set_title(f"{name}, {label(values)}", fontsize=10)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            ax.set_xlabel("training step")
            ax.set_ylabel("pre-activation value")
            ax.grid(True, alpha=0.3)
            if ax.get_lines():
                ax.legend(fontsize=8, title="percentile", title_fontsize=8)
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"Input to the activation: 15th/50th/85th percentiles\nof {prefix}", fontsize=11)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return prefix
