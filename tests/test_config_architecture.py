"""A brand-new architecture from one YAML file on Hydra's search path, no Python."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import ROOT, TINY

README_EXAMPLE = re.compile(r"```yaml\n(# conf/model/my_net\.yaml\n.*?)```", re.S)


def readme_example() -> str:
    """The worked example of the README's "Add an architecture" section."""
    match = README_EXAMPLE.search((ROOT / "README.md").read_text())
    assert match, "README must show conf/model/my_net.yaml"
    return match.group(1)


def test_readme_architecture_runs_both_arms_from_a_user_config_dir(train, tmp_path, mnist_root):
    user_conf = tmp_path / "my_conf"
    (user_conf / "model").mkdir(parents=True)
    (user_conf / "model" / "my_net.yaml").write_text(readme_example())
    result = train(
        [
            "-m",
            "model=my_net",
            "bn=true,false",
            f"hydra.searchpath=[file://{user_conf}]",
            f"data.root={mnist_root}",
            *TINY,
            "trainer.limit_train_batches=2",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/model=my_net,bn=*"))
    assert [r.name for r in runs] == ["model=my_net,bn=false", "model=my_net,bn=true"]
    for run in runs:
        assert json.loads((run / "result.json").read_text())["status"] == "ok"
    # The run prints its layer table, BN layers only in the bn=true arm.
    log = (runs[1] / "train.log").read_text() + result.stdout
    assert "BatchNorm2d" in log


def test_bad_user_architecture_is_refused_before_training(train, tmp_path, mnist_root):
    user_conf = tmp_path / "my_conf"
    (user_conf / "model").mkdir(parents=True)
    (user_conf / "model" / "bad_net.yaml").write_text(
        "input: {channels: 1, size: 28}\nlayers:\n  - conv: {out: 8, kernel: 3}\n"
        "  - linear: {out: 10}\n"
    )
    result = train(
        ["model=bad_net", f"hydra.searchpath=[file://{user_conf}]", f"data.root={mnist_root}"]
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[0] == (
        "error: model 'bad_net', layer 1 (linear): needs a flat input but gets 8x26x26; "
        "add 'flatten' before it"
    )
    assert not (Path(tmp_path) / "outputs").exists()
