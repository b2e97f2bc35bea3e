"""List the architectures in a config directory with their sizes for both arms."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from bn_compare.models import SpecError, build_model, count_parameters, input_shape


def catalog(conf_dir: Path) -> list[tuple[str, str, str, str]]:
    """(name, input, parameters without BN, parameters with BN) for every model config."""
    rows = []
    for path in sorted((Path(conf_dir) / "model").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        try:
            shape = "x".join(str(s) for s in input_shape(cfg))
            counts = [
                f"{count_parameters(build_model(cfg, bn=bn, name=path.stem)):,}"
                for bn in (False, True)
            ]
        except SpecError as err:
            shape, counts = "?", [f"error: {err}", ""]
        rows.append((path.stem, shape, *counts))
    return rows


def print_catalog(conf_dir: Path) -> None:
    rows = [("model", "input", "params bn=false", "params bn=true"), *catalog(conf_dir)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
