"""The sweep report: what the runs of one or more sweep directories add up to.

``write_report([sweep_dir, ...], out_dir)`` reads every run directory's
``result.json``, ``metrics.csv``, ``.hydra/`` files and (for activation
statistics) TensorBoard event files, and writes ``summary.csv``,
``deltas.csv``, ``summary.md`` and PNG figures into ``out_dir``. It runs at the
end of every multirun and from the command line (``python -m bn_compare.report``).
"""

from __future__ import annotations

from bn_compare.report.results import Run, failed_runs, load_run, load_runs, run_dirs
from bn_compare.report.write import DEFAULT_TARGET_ACC, Report, build_report, write_report

__all__ = [
    "DEFAULT_TARGET_ACC",
    "Report",
    "Run",
    "build_report",
    "failed_runs",
    "load_run",
    "load_runs",
    "run_dirs",
    "write_report",
]
