"""The sweep report on a fabricated sweep directory whose numbers are known by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from bn_compare.report import build_report, failed_runs, write_report
from bn_compare.report.__main__ import main as report_main
from bn_compare.report.results import load_run
from bn_compare.report.stats import estimate, t_ppf

HEADER = [
    "epoch",
    "step",
    "train/loss_step",
    "train/loss_epoch",
    "val/acc",
    "val/acc_best",
    "test/acc",
    "time/epoch",
]


def make_run(
    sweep: Path,
    bn: bool,
    batch_size: int,
    seed: int,
    *,
    val: tuple[float, float] = (0.85, 0.89),
    test: float | None = 0.9,
    status: str | None = "ok",
    nan_loss: bool = False,
    error: str = "",
) -> Path:
    """A run directory as run.py writes it: two epochs of 10 steps each."""
    flag = str(bn).lower()
    run = sweep / f"bn={flag},batch_size={batch_size},seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    config = {
        "bn": bn,
        "bn_position": "before",
        "norm": "batch",
        "batch_size": batch_size,
        "epochs": 2,
        "seed": seed,
        "optimizer": {"lr": 0.01},
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = [f"bn={flag}", f"batch_size={batch_size}", f"seed={seed}", "data.root=/data"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is None:  # crashed before writing a result
        return run
    final_loss = 0.5 + 0.1 * seed
    rows = [
        {"epoch": 0, "step": 4, "train/loss_step": 2.0},
        {"epoch": 0, "step": 9, "train/loss_step": "nan" if nan_loss else 1.5},
        {"epoch": 0, "step": 9, "val/acc": val[0], "val/acc_best": val[0]},
        {"epoch": 0, "step": 9, "train/loss_epoch": 1.0, "time/epoch": 2.0},
        {"epoch": 1, "step": 14, "train/loss_step": 0.7},
        {"epoch": 1, "step": 19, "val/acc": val[1], "val/acc_best": max(val)},
        {"epoch": 1, "step": 19, "train/loss_epoch": final_loss, "time/epoch": 4.0},
    ]
    if test is not None:
        rows.append({"epoch": 2, "step": 20, "test/acc": test})
    if status == "ok":
        with open(run / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, HEADER)
            writer.writeheader()
            writer.writerows(rows)
        result = {
            "status": "ok",
            "params": {"bn": bn, "batch_size": batch_size, "seed": seed, "lr": 0.01},
            "overrides": overrides,
            "metrics": {"test/acc": test, "val/acc": val[1]},
            "epochs": 2,
            "steps": 20,
        }
    else:
        result = {"status": status, "error": error, "overrides": overrides}
    (run / "result.json").write_text(json.dumps(result))
    return run


@pytest.fixture
def sweep(tmp_path) -> Path:
    """batch 32: 3 seeds per arm, all ok. batch 64: BN seed 2 diverges (NaN loss), no-BN
    seed 0 fails, no-BN seed 3 never wrote a result: seed 1 is the only complete pair."""
    d = tmp_path / "sweep"
    for seed, test in zip((0, 1, 2), (0.92, 0.94, 0.96), strict=True):
        make_run(d, True, 32, seed, val=(0.91, 0.93), test=test)
        make_run(d, False, 32, seed, val=(0.85, 0.89), test=0.90)
    make_run(d, True, 64, 0, val=(0.80, 0.90), test=0.93)
    make_run(d, True, 64, 1, val=(0.95, 0.94), test=0.95)
    make_run(d, True, 64, 2, val=(0.5, 0.1), test=0.1, nan_loss=True)
    make_run(d, False, 64, 0, status="failed", error="RuntimeError: boom")
    make_run(d, False, 64, 1, test=0.91)
    make_run(d, False, 64, 2, test=0.92)
    make_run(d, False, 64, 3, status=None)
    return d


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_t_quantiles_match_the_table():
    # Two-sided 95% Student t critical values from standard tables.
    for df, value in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281)):
        assert t_ppf(0.975, df) == pytest.approx(value, abs=5e-5)
    assert t_ppf(0.5, 3) == 0.0
    assert t_ppf(0.025, 2) == pytest.approx(-4.3027, abs=5e-5)
    est = estimate([0.02, 0.04, 0.06])
    assert (est.n, est.mean, est.std) == (3, pytest.approx(0.04), pytest.approx(0.02))
    assert est.ci95 == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    single = estimate([0.5])
    assert (single.mean, single.std, single.ci95) == (0.5, None, None)


def test_configuration_table_has_hand_computed_statistics(sweep):
    write_report([sweep], sweep, target_acc=0.9, figures=False)
    rows = {(r["bn"], r["batch_size"]): r for r in _rows(sweep / "summary.csv")}
    assert set(rows) == {("true", "32"), ("false", "32"), ("true", "64"), ("false", "64")}
    assert list(_rows(sweep / "summary.csv")[0])[:2] == ["bn", "batch_size"]  # seed aggregated

    bn32 = rows[("true", "32")]
    assert (bn32["runs"], bn32["ok"], bn32["diverged"], bn32["failed"]) == ("3", "3", "0", "0")
    assert float(bn32["test_acc_mean"]) == pytest.approx(0.94)
    assert float(bn32["test_acc_std"]) == pytest.approx(0.02)
    assert float(bn32["test_acc_ci95"]) == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert float(bn32["val_acc_final_mean"]) == pytest.approx(0.93)
    assert float(bn32["val_acc_final_std"]) == pytest.approx(0.0, abs=1e-12)
    assert float(bn32["val_acc_best_mean"]) == pytest.approx(0.93)
    # final training loss 0.5 + 0.1 * seed: mean 0.6, std 0.1
    assert float(bn32["train_loss_final_mean"]) == pytest.approx(0.6)
    assert float(bn32["train_loss_final_std"]) == pytest.approx(0.1)
    # val/acc 0.91 >= 0.9 first logged at step 9 of epoch 0: 10 steps, epoch 1
    assert bn32["target_reached"] == "3/3"
    assert float(bn32["steps_to_target_mean"]) == 10
    assert float(bn32["epochs_to_target_mean"]) == 1
    assert float(bn32["epoch_time_s_mean"]) == pytest.approx(3.0)

    nobn32 = rows[("false", "32")]
    assert nobn32["target_reached"] == "0/3"
    assert nobn32["steps_to_target_mean"] == ""
    assert float(nobn32["test_acc_mean"]) == pytest.approx(0.90)

    bn64 = rows[("true", "64")]  # seed 2 diverged: out of the averages, counted as such
    assert (bn64["runs"], bn64["ok"], bn64["diverged"]) == ("3", "2", "1")
    assert float(bn64["test_acc_mean"]) == pytest.approx(0.94)
    assert float(bn64["test_acc_std"]) == pytest.approx(math.sqrt(2) * 0.01)
    assert float(bn64["test_acc_ci95"]) == pytest.approx(12.706205 * 0.01, rel=1e-6)
    assert float(bn64["val_acc_best_mean"]) == pytest.approx(0.925)  # max(0.8,0.9), max(.95,.94)
    assert float(bn64["val_acc_final_mean"]) == pytest.approx(0.92)
    # seed 0 reaches 0.9 at step 19 (20 steps, epoch 2), seed 1 at step 9 (10 steps, epoch 1)
    assert bn64["target_reached"] == "2/2"
    assert float(bn64["steps_to_target_mean"]) == 15
    assert float(bn64["epochs_to_target_mean"]) == 1.5

    nobn64 = rows[("false", "64")]
    assert (nobn64["runs"], nobn64["ok"], nobn64["failed"], nobn64["incomplete"]) == (
        "4",
        "2",
        "1",
        "1",
    )


def test_deltas_are_paired_by_seed(sweep):
    write_report([sweep], sweep, figures=False)
    deltas = {(r["batch_size"], r["metric"]): r for r in _rows(sweep / "deltas.csv")}
    d32 = deltas[("32", "test_acc")]
    # per seed: 0.92-0.90, 0.94-0.90, 0.96-0.90
    assert (d32["pairs"], d32["seeds"]) == ("3", "0 1 2")
    assert float(d32["mean"]) == pytest.approx(0.04)
    assert float(d32["std"]) == pytest.approx(0.02)
    assert float(d32["ci95"]) == pytest.approx(0.0496828, abs=1e-6)
    assert float(d32["ci_low"]) == pytest.approx(0.04 - 0.0496828, abs=1e-6)
    assert float(deltas[("32", "val_acc_final")]["mean"]) == pytest.approx(0.93 - 0.89)
    d64 = deltas[("64", "test_acc")]
    # only seed 1 finished in both arms: 0.95 - 0.91, no interval from one pair
    assert (d64["pairs"], d64["seeds"]) == ("1", "1")
    assert float(d64["mean"]) == pytest.approx(0.04)
    assert d64["ci95"] == "" and d64["std"] == ""


def test_summary_shows_diverged_failed_and_incomplete_runs(sweep):
    path = write_report([sweep], sweep, target_acc=0.9)
    text = path.read_text()
    first = text.split("\n\n")[1]
    assert first.startswith("Yes: with BN, test accuracy was higher")
    assert "+4.00 percentage points at batch_size=32 (95% CI -0.97 to +8.97, 3 seeds" in first
    assert "contains zero (no clear difference) at 1 of 1 setting with an interval" in first
    assert "1 setting(s) have a single seed pair and no interval." in first
    assert "1 run(s) diverged (BN: 1, no BN: 0)" in first
    assert "| bn=true,batch_size=64,seed=2 | diverged | training loss became NaN" in text
    assert "| bn=false,batch_size=64,seed=0 | failed | RuntimeError: boom |" in text
    assert "| bn=false,batch_size=64,seed=3 | incomplete | no result recorded" in text
    assert "not reached (0/3)" in text
    assert "94.00 ± 2.00 [89.03, 98.97]" in text  # bn=true, batch 32 test accuracy
    assert "+4.00 (1 pair, no CI)" in text
    assert sorted(failed_runs(sweep)) == [
        ("bn=false,batch_size=64,seed=0", "RuntimeError: boom"),
        ("bn=false,batch_size=64,seed=3", "no result recorded (crashed or still running)"),
    ]
    for name in ("train_loss_vs_step.png", "val_acc_vs_epoch.png", "acc_vs_batch_size.png"):
        assert (sweep / name).stat().st_size > 0
        assert f"]({name})" in text


def test_a_status_diverged_record_counts_as_diverged(tmp_path):
    run = make_run(tmp_path, True, 32, 0, status="diverged", error="loss is nan at step 7")
    loaded = load_run(run)
    assert (loaded.outcome, loaded.reason) == ("diverged", "loss is nan at step 7")


def test_a_missing_arm_is_reported(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        make_run(sweep, True, 32, seed)
        make_run(sweep, True, 64, seed)
    report = build_report([sweep])
    assert report.keys == ["bn", "batch_size"]
    text = write_report([sweep], tmp_path / "out", figures=False).read_text()
    assert "BN and no BN cannot be compared: the bn=false arm is missing entirely" in text
    assert "**Missing arm:** the bn=false arm is missing entirely" in text
    assert "n/a (no bn=false runs)" in text
    deltas = _rows(tmp_path / "out" / "deltas.csv")
    assert [d["missing"] for d in deltas] == ["no bn=false runs"] * 2


def test_an_arm_with_only_failures_is_reported(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep, True, 32, 0)
    make_run(sweep, False, 32, 0, status="failed", error="ValueError: bad")
    text = write_report([sweep], sweep, figures=False).read_text()
    assert "the bn=false arm has no successful run (1 run(s), none finished ok)" in text


def test_command_line_combines_sweeps_and_writes_to_out(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    make_run(a, True, 32, 0, test=0.93)
    make_run(b, False, 32, 0, test=0.90)
    out = tmp_path / "out"
    args = [str(a), str(b), "--out", str(out), "--target-acc", "0.8", "--no-figures"]
    assert report_main(args) == 0
    assert not list(out.glob("*.png"))
    (row,) = _rows(out / "deltas.csv")[:1]
    assert float(row["mean"]) == pytest.approx(0.03)
    summary = _rows(out / "summary.csv")
    assert {r["target_acc"] for r in summary} == {"0.8"}
    assert report_main([str(tmp_path / "nope")]) == 2


def test_a_setting_missing_one_arm_is_named(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        make_run(sweep, True, 32, seed, test=0.92)
        make_run(sweep, False, 32, seed, test=0.90)
        make_run(sweep, True, 64, seed)
    first = write_report([sweep], sweep, figures=False).read_text().split("\n\n")[1]
    assert "1 setting(s) could not be compared: batch_size=64 (no bn=false runs)." in first
    assert "+2.00 percentage points at batch_size=32" in first
