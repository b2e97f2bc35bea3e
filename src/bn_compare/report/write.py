"""Build the report from run directories and write its tables, text and figures."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bn_compare.report.results import Run, load_runs
from bn_compare.report.stats import Estimate
from bn_compare.report.summary import (
    DELTA_METRICS,
    ConfigRow,
    Delta,
    arm_status,
    configurations,
    paired_deltas,
    varying_keys,
)

log = logging.getLogger(__name__)

DEFAULT_TARGET_ACC = 0.9
# Per-configuration statistics: (attribute, csv name, markdown header, kind).
COLUMNS = (
    ("val_acc_final", "val_acc_final", "final val acc %", "acc"),
    ("val_acc_best", "val_acc_best", "best val acc %", "acc"),
    ("test_acc", "test_acc", "test acc %", "acc"),
    ("train_loss_final", "train_loss_final", "final train loss", "loss"),
)
FIGURES = {
    "train_loss": "train_loss_vs_step.png",
    "val_acc_epoch": "val_acc_vs_epoch.png",
    "val_acc_step": "val_acc_vs_step.png",
    "acc_batch": "acc_vs_batch_size.png",
    "activations": "activations.png",
}


@dataclass
class Report:
    """Everything the report says, computed from the runs' files."""

    sweep_dirs: list[Path]
    target_acc: float
    runs: list[Run]
    keys: list[str]
    rows: list[ConfigRow]
    deltas: list[Delta]
    arms: dict[bool, str | None]
    figures: dict[str, str] = field(default_factory=dict)

    @property
    def problems(self) -> list[Run]:
        return [r for r in self.runs if r.outcome != "ok"]


def build_report(sweep_dirs: list[Path], target_acc: float = DEFAULT_TARGET_ACC) -> Report:
    runs = [run for d in sweep_dirs for run in load_runs(Path(d))]
    keys = varying_keys(runs)
    rows = configurations(runs, keys, target_acc)
    return Report(
        sweep_dirs=[Path(d) for d in sweep_dirs],
        target_acc=target_acc,
        runs=runs,
        keys=keys,
        rows=rows,
        deltas=paired_deltas(rows, keys),
        arms=arm_status(runs),
    )


def write_report(
    sweep_dirs: list[Path],
    out_dir: Path,
    target_acc: float = DEFAULT_TARGET_ACC,
    figures: bool = True,
) -> Path:
    """Write summary.csv, deltas.csv, summary.md and (unless ``figures`` is False) the
    figures into ``out_dir``. Returns the path of ``summary.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(list(sweep_dirs), target_acc)
    if report.rows and figures:
        _write_figures(report, out_dir)
    _write_summary_csv(report, out_dir / "summary.csv")
    _write_deltas_csv(report, out_dir / "deltas.csv")
    path = out_dir / "summary.md"
    path.write_text(markdown(report, out_dir))
    return path


def _write_figures(report: Report, out_dir: Path) -> None:
    from bn_compare.report import plots

    groups = plots.panel_groups(report.rows, report.keys)
    figures: dict[str, str] = {}
    if plots.plot_train_loss(out_dir / FIGURES["train_loss"], groups):
        figures["train_loss"] = FIGURES["train_loss"]
    by_step = plots.validates_within_epochs(groups)
    name = "val_acc_step" if by_step else "val_acc_epoch"
    if plots.plot_val_acc(out_dir / FIGURES[name], groups, by_step):
        figures[name] = FIGURES[name]
    if plots.plot_acc_vs_batch_size(out_dir / FIGURES["acc_batch"], report.rows, report.keys):
        figures["acc_batch"] = FIGURES["acc_batch"]
    try:
        prefix = plots.plot_activations(out_dir / FIGURES["activations"], groups)
    except Exception as err:  # unreadable event files must not cost the rest of the report
        log.warning("activation plot skipped: %s", err)
        prefix = None
    if prefix:
        figures["activations"] = FIGURES["activations"]
        figures["activations_tag"] = prefix
    report.figures = figures


# -- csv ---------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _cell(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _write_summary_csv(report: Report, path: Path) -> None:
    header = [*report.keys, "runs", "ok", "diverged", "failed", "incomplete"]
    for _, name, _, _ in COLUMNS:
        header += [f"{name}_n", f"{name}_mean", f"{name}_std", f"{name}_ci95"]
    header += [
        "target_acc",
        "target_reached",
        "steps_to_target_mean",
        "epochs_to_target_mean",
        "epoch_time_s_mean",
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in report.rows:
            line = [_cell(row.values[k]) for k in report.keys]
            line += [len(row.runs)] + [
                row.count(o) for o in ("ok", "diverged", "failed", "incomplete")
            ]
            for attr, _, _, _ in COLUMNS:
                est = row.est(attr)
                line += [est.n, _num(est.mean), _num(est.std), _num(est.ci95)]
            line += [
                report.target_acc,
                f"{row.reached}/{len(row.metrics)}",
                _num(row.to_target("steps_to_target")),
                _num(row.to_target("epochs_to_target")),
                _num(row.est("epoch_time_s").mean),
            ]
            writer.writerow(line)


def _write_deltas_csv(report: Report, path: Path) -> None:
    others = [k for k in report.keys if k != "bn"]
    header = [*others, "metric", "pairs", "seeds", "mean", "std", "ci95", "ci_low", "ci_high"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*header, "missing"])
        for delta in report.deltas:
            base = [_cell(delta.values[k]) for k in others]
            if delta.missing:
                writer.writerow([*base, "", 0, "", "", "", "", "", "", delta.missing])
                continue
            for attr, _ in DELTA_METRICS:
                est = delta.estimates[attr]
                seeds = " ".join(str(s) for s in delta.seeds[attr])
                writer.writerow(
                    [
                        *base,
                        attr,
                        est.n,
                        seeds,
                        _num(est.mean),
                        _num(est.std),
                        _num(est.ci95),
                        _num(est.low),
                        _num(est.high),
                        "",
                    ]
                )


# -- markdown ----------------------------------------------------------------------------


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _acc_cell(est: Estimate) -> str:
    if est.mean is None:
        return "n/a"
    if est.std is None:
        return f"{_pct(est.mean)} (1 run)"
    return f"{_pct(est.mean)} ± {_pct(est.std)} [{_pct(est.low)}, {_pct(est.high)}]"


def _loss_cell(est: Estimate) -> str:
    if est.mean is None:
        return "n/a"
    if est.std is None:
        return f"{est.mean:.4f}"
    return f"{est.mean:.4f} ± {est.std:.4f}"


def _delta_cell(est: Estimate | None) -> str:
    if est is None or est.mean is None:
        return "n/a"
    if est.ci95 is None:
        return f"{_pct(est.mean, True)} (1 pair, no CI)"
    return f"{_pct(est.mean, True)} [{_pct(est.low, True)}, {_pct(est.high, True)}]"


def _target_cell(row: ConfigRow, attr: str) -> str:
    n = len(row.metrics)
    if n == 0:
        return "n/a"
    mean = row.to_target(attr)
    if mean is None:
        return f"not reached (0/{n})"
    text = f"{mean:,.0f}" if attr == "steps_to_target" else f"{mean:.1f}"
    return text if row.reached == n else f"{text} (reached {row.reached}/{n})"


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_cell(v)}" for k, v in values.items())


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |" for line in lines]
    return out


def answer(report: Report) -> str:
    """A few plain sentences: did BN help, by how much, where, and how sure."""
    missing = [text for text in report.arms.values() if text]
    if not report.runs:
        return "No runs were found, so there is nothing to compare."
    if missing:
        return "BN and no BN cannot be compared: " + "; ".join(missing) + "."
    metric, metric_label = "test_acc", "test accuracy"
    usable = [d for d in report.deltas if not d.missing and d.estimates[metric].n]
    if not usable:
        metric, metric_label = "val_acc_best", "best validation accuracy"
        usable = [d for d in report.deltas if not d.missing and d.estimates[metric].n]
    if not usable:
        reasons = "; ".join(
            f"{_label(d.values) or 'overall'}: {d.missing}" for d in report.deltas if d.missing
        )
        return f"BN and no BN cannot be compared: no seed finished in both arms ({reasons})."
    n = len(usable)
    means = [d.estimates[metric].mean for d in usable]
    up = sum(m > 0 for m in means)
    where = "setting" if n == 1 else "settings"
    if up == n:
        verdict = f"Yes: with BN, {metric_label} was higher than without it " + (
            "in the one setting compared" if n == 1 else f"at all {n} {where} compared"
        )
    elif up == 0:
        verdict = (
            f"No: with BN, {metric_label} was not higher than without it "
            f"at any of the {n} {where} compared"
        )
    else:
        verdict = f"Mixed: with BN, {metric_label} was higher at {up} of {n} {where} compared"
    sentences = [verdict + "."]

    def describe(d: Delta) -> str:
        est = d.estimates[metric]
        place = f" at {_label(d.values)}" if d.values else ""
        if est.ci95 is None:
            spread = "1 seed, no interval"
        else:
            spread = f"95% CI {_pct(est.low, True)} to {_pct(est.high, True)}, {est.n} seeds paired"
        return f"{_pct(est.mean, True)} percentage points{place} ({spread})"

    best = max(usable, key=lambda d: d.estimates[metric].mean)
    worst = min(usable, key=lambda d: d.estimates[metric].mean)
    if n == 1:
        sentences.append(f"The difference (BN minus no BN) is {describe(best)}.")
    else:
        if best.estimates[metric].mean > 0:
            sentences.append(f"The largest gain is {describe(best)}.")
        if worst.estimates[metric].mean < 0:
            sentences.append(f"The largest loss is {describe(worst)}.")
        elif worst is not best:
            sentences.append(f"The smallest gain is {describe(worst)}.")
    with_ci = [d.estimates[metric] for d in usable if d.estimates[metric].ci95 is not None]
    if not with_ci:
        sentences.append(
            "Each setting has a single seed in both arms, so there is no confidence interval: "
            "treat these differences as anecdotal."
        )
    else:
        above = sum(e.low > 0 for e in with_ci)
        below = sum(e.high < 0 for e in with_ci)
        unclear = len(with_ci) - above - below
        parts = []
        if above:
            parts.append(f"lies above zero (BN better) at {above}")
        if below:
            parts.append(f"lies below zero (BN worse) at {below}")
        if unclear:
            parts.append(f"contains zero (no clear difference) at {unclear}")
        pairs = "/".join(str(s) for s in sorted({e.n for e in with_ci}))
        where = "setting" if len(with_ci) == 1 else "settings"
        sentences.append(
            f"How sure: the 95% interval of the paired difference {' and '.join(parts)} "
            f"of {len(with_ci)} {where} with an interval ({pairs} seed pairs; "
            "few seeds give wide intervals)."
        )
        if len(with_ci) < n:
            sentences.append(
                f"{n - len(with_ci)} setting(s) have a single seed pair and no interval."
            )
    skipped = [d for d in report.deltas if d not in usable]
    if skipped:
        names = "; ".join(
            f"{_label(d.values) or 'overall'} ({d.missing or 'no paired seeds'})" for d in skipped
        )
        sentences.append(f"{len(skipped)} setting(s) could not be compared: {names}.")
    diverged = [r for r in report.runs if r.outcome == "diverged"]
    broken = [r for r in report.runs if r.outcome in ("failed", "incomplete")]
    if diverged or broken:
        by_arm = {bn: sum(bool(r.params.get("bn")) is bn for r in diverged) for bn in (True, False)}
        text = []
        if diverged:
            text.append(
                f"{len(diverged)} run(s) diverged (BN: {by_arm[True]}, no BN: {by_arm[False]})"
            )
        if broken:
            text.append(f"{len(broken)} run(s) failed or did not finish")
        sentences.append("; ".join(text) + ": they are listed below and left out of the averages.")
    return " ".join(sentences)


def markdown(report: Report, out_dir: Path | None = None) -> str:
    out = ["# Sweep report", ""]
    out += [answer(report), ""]
    dirs = ", ".join(f"`{d}`" for d in report.sweep_dirs)
    ok = sum(r.outcome == "ok" for r in report.runs)
    out += [
        f"Runs: {len(report.runs)} from {dirs} ({ok} ok). "
        f"Configurations are defined by the keys that vary across runs "
        f"({', '.join(report.keys) or 'none'}); seeds are aggregated.",
        "",
    ]
    for text in report.arms.values():
        if text:
            out += [f"**Missing arm:** {text}.", ""]

    out += ["## BN minus no BN, paired by seed", ""]
    others = [k for k in report.keys if k != "bn"]
    lines = []
    for d in report.deltas:
        setting = [_cell(d.values[k]) for k in others] or ["all"]
        if d.missing:
            lines.append([*setting, "0", *([f"n/a ({d.missing})"] * len(DELTA_METRICS))])
            continue
        pairs = d.estimates["test_acc"].n or d.estimates["val_acc_best"].n
        lines.append(
            [*setting, str(pairs), *[_delta_cell(d.estimates[a]) for a, _ in DELTA_METRICS]]
        )
    header = [*(others or ["setting"]), "seed pairs"]
    header += [f"Δ {name} (pp) [95% CI]" for _, name in DELTA_METRICS]
    out += _table(header, lines)
    out += [
        "",
        "Differences are in percentage points (pp): each seed's BN run minus the same seed's "
        "no-BN run, then mean and Student t 95% interval over seeds.",
        "",
    ]

    out += [f"## Configurations (target val accuracy {report.target_acc:g})", ""]
    header = [*report.keys, "runs", "ok", "diverged", "failed/incomplete"]
    header += [h for _, _, h, _ in COLUMNS]
    header += ["steps to target", "epochs to target", "epoch time (s)"]
    lines = []
    for row in report.rows:
        line = [_cell(row.values[k]) for k in report.keys]
        line += [
            str(len(row.runs)),
            str(row.count("ok")),
            str(row.count("diverged")),
            str(row.count("failed") + row.count("incomplete")),
        ]
        for attr, _, _, kind in COLUMNS:
            est = row.est(attr)
            line.append(_acc_cell(est) if kind == "acc" else _loss_cell(est))
        line.append(_target_cell(row, "steps_to_target"))
        line.append(_target_cell(row, "epochs_to_target"))
        t = row.est("epoch_time_s").mean
        line.append("n/a" if t is None else f"{t:.2f}")
        lines.append(line)
    out += _table(header, lines)
    out += [
        "",
        "Accuracies: mean ± sample std [Student t 95% CI] over the seeds that finished ok. "
        "Final val acc is the last validation; best val acc the highest; test acc is measured "
        "with the best checkpoint. Steps to target: optimizer steps done when validation "
        "accuracy first reached the target (mean over the runs that reached it); epochs: "
        "the 1-based epoch of that validation. Epoch time: mean wall time of a full epoch, "
        "validation included.",
        "",
    ]

    out += ["## Runs left out of the averages", ""]
    if report.problems:
        lines = [
            [r.name, r.outcome, r.reason.splitlines()[0] if r.reason else ""]
            for r in report.problems
        ]
        out += _table(["run", "outcome", "reason"], lines)
    else:
        out.append("None: every run finished ok.")
    out.append("")

    if report.figures:
        out += ["## Figures", ""]
        captions = {
            "train_loss": "Training loss vs step, BN and no BN overlaid (mean over seeds, "
            "shaded min to max), one panel per setting; each run's logged per-step loss is "
            "smoothed by a trailing moving average over 1/60 of its points.",
            "val_acc_epoch": "Validation accuracy vs epoch.",
            "val_acc_step": "Validation accuracy vs training step.",
            "acc_batch": "Final validation and test accuracy vs batch size (mean ± std).",
            "activations": "15th, 50th and 85th percentiles of the input to the activation "
            f"(`{report.figures.get('activations_tag', '')}`) over training, no BN left, "
            "BN right (read from the TensorBoard event files).",
        }
        for key, caption in captions.items():
            if key in report.figures:
                out += [f"![{key}]({report.figures[key]})", "", caption, ""]
    out += [
        "Rebuild with `python -m bn_compare.report "
        + " ".join(str(d) for d in report.sweep_dirs)
        + (f" --out {out_dir}" if out_dir and out_dir != report.sweep_dirs[0] else "")
        + f" --target-acc {report.target_acc:g}`.",
        "",
    ]
    return "\n".join(out)
