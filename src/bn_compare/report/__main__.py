"""python -m bn_compare.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--target-acc 0.9]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bn_compare.report.write import DEFAULT_TARGET_ACC, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bn_compare.report",
        description="Rebuild the sweep report (summary.csv, deltas.csv, summary.md, PNG plots) "
        "from what the runs of one or more sweep directories wrote.",
    )
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep directories to combine")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: the first sweep dir)"
    )
    parser.add_argument(
        "--target-acc",
        type=float,
        default=DEFAULT_TARGET_ACC,
        help=f"validation accuracy whose first reach is timed (default {DEFAULT_TARGET_ACC})",
    )
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.sweep_dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not 0 < args.target_acc <= 1:
        print(f"error: --target-acc must be in (0, 1], got {args.target_acc}", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dirs[0]
    path = write_report(
        args.sweep_dirs, out, target_acc=args.target_acc, figures=not args.no_figures
    )
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
