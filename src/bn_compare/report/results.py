"""Read what the runs of a sweep wrote: their result records and metrics files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


def run_dirs(sweep_dir: Path) -> list[Path]:
    """Run directories directly under a sweep directory: those Hydra wrote a config into."""
    return sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra" / "config.yaml").is_file())


def load_run(path: Path) -> Run:
    result_file = path / "result.json"
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides: list[str] = []
    if overrides_file.is_file():
        import yaml

        overrides = [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])]
    if not result_file.is_file():
        return Run(path, "incomplete", overrides)
    result = json.loads(result_file.read_text())
    return Run(path, str(result.get("status", "incomplete")), overrides, result)


def load_runs(sweep_dir: Path) -> list[Run]:
    return [load_run(p) for p in run_dirs(sweep_dir)]


def failed_runs(sweep_dir: Path) -> list[tuple[str, str]]:
    """(run name, error line) for every run of the sweep that failed or never finished."""
    return [(r.name, r.error) for r in load_runs(sweep_dir) if r.status in ("failed", "incomplete")]
