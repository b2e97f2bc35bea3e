"""Sweeps beyond one process: parallel launchers, DDP, data prepared once, run names."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import threading
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bn_compare import launch, parallel

TESTS = Path(__file__).parent
SWEEP = ["-m", "bn=true,false", *TINY, "data.limit_train=128", "trainer.limit_train_batches=2"]
COMPARED = ("val/acc", "val/loss", "test/acc", "test/loss", "train/loss_epoch")


def needs(module: str, extra: str):
    found = importlib.util.find_spec(module) is not None
    reason = f"{module} is not installed (pip install -e '.[{extra}]')"
    return pytest.mark.skipif(not found, reason=reason)


def sweep_dir(cwd: Path) -> Path:
    (day,) = (cwd / "outputs" / "multirun").iterdir()
    (sweep,) = day.iterdir()
    return sweep


def results(sweep: Path) -> dict[str, dict]:
    return {
        run.name: json.loads((run / "result.json").read_text())
        for run in sorted(sweep.iterdir())
        if (run / "result.json").is_file()
    }


def assert_same_metrics(got: dict[str, dict], want: dict[str, dict]) -> None:
    assert sorted(got) == sorted(want) == ["bn=false", "bn=true"]
    for name, record in got.items():
        assert record["status"] == "ok", record.get("error")
        for key in COMPARED:
            # Same seeds, same batches; only the thread count may differ (float sums).
            assert record["metrics"][key] == pytest.approx(
                want[name]["metrics"][key], rel=1e-4, abs=1e-5
            ), (name, key)
        assert record["steps"] == want[name]["steps"]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, mnist_root) -> dict[str, dict]:
    """The reference: the same sweep with Hydra's basic (sequential) launcher."""
    cwd = tmp_path_factory.mktemp("sequential")
    result = run_train([*SWEEP, f"data.root={mnist_root}"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return results(sweep_dir(cwd))


def counting_data(tmp_path: Path, mnist_root: Path) -> tuple[list[str], dict, Path]:
    """Overrides and environment for an empty data root whose download is recorded."""
    log = tmp_path / "downloads.log"
    env = {
        "COUNTING_MNIST_SOURCE": str(mnist_root),
        "COUNTING_MNIST_LOG": str(log),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS), os.environ["PYTHONPATH"]])
        if os.environ.get("PYTHONPATH")
        else os.pathsep.join([str(ROOT / "src"), str(TESTS)]),
    }
    args = ["data.dataset=counting_mnist.CountingMNIST", f"data.root={tmp_path / 'data'}"]
    return args, env, log


@needs("hydra_plugins.hydra_joblib_launcher", "joblib")
def test_joblib_matches_sequential_and_prepares_data_once(sequential, tmp_path, mnist_root):
    args, env, log = counting_data(tmp_path, mnist_root)
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    result = run_train([*SWEEP, *launcher, *args], tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "n_jobs=2" in result.stdout + result.stderr
    assert_same_metrics(results(sweep_dir(tmp_path)), sequential)
    # Downloaded once, by the launching process, before the two jobs started.
    assert len(log.read_text().split()) == 1


@pytest.mark.slow
@needs("hydra_plugins.hydra_submitit_launcher", "submitit")
def test_submitit_local_matches_sequential_and_prepares_data_once(sequential, tmp_path, mnist_root):
    args, env, log = counting_data(tmp_path, mnist_root)
    result = run_train([*SWEEP, "hydra/launcher=submitit_local", *args], tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    assert (sweep / ".submitit").is_dir()
    assert_same_metrics(results(sweep), sequential)
    assert len(log.read_text().split()) == 1


@pytest.mark.slow
@needs("hydra_plugins.hydra_ray_launcher", "ray")
def test_ray_matches_sequential(sequential, tmp_path, mnist_root):
    result = run_train([*SWEEP, "hydra/launcher=ray", f"data.root={mnist_root}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_metrics(results(sweep_dir(tmp_path)), sequential)


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def assert_trained_once(run: Path, steps: int) -> None:
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "ok", record.get("error")
    # Each of the two processes takes half of the 128 images: 64 / 32 = 2 steps an epoch.
    assert record["steps"] == steps
    pids = {p.name.split(".")[-2] for p in run.glob("events.out.tfevents.*")}
    assert len(pids) == 1, "TensorBoard files written by more than one process"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs = [r["epoch"] for r in rows if r.get("val/acc")]
    assert epochs == ["0"], "validation logged more than once"
    assert [p.name for p in run.glob("*.log")] == ["train.log"]


def test_ddp_on_two_cpu_processes_trains_and_logs_once(train, tmp_path, mnist_root):
    result = train(
        [*TINY, *DDP, f"data.root={mnist_root}", "data.limit_train=128", "batch_size=32"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs").rglob("result.json")]
    assert len(runs) == 1
    (day,) = (tmp_path / "outputs").iterdir()
    assert len(list(day.iterdir())) == 1, "a second run directory was created"
    assert_trained_once(runs[0].parent, steps=math.ceil(64 / 32))


@pytest.mark.slow
def test_sweep_of_ddp_jobs_gives_one_directory_per_job(train, tmp_path, mnist_root):
    result = train([*SWEEP, *DDP, f"data.root={mnist_root}", "batch_size=32"])
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["bn=false", "bn=true"]
    assert len(list((tmp_path / "outputs" / "multirun").rglob("result.json"))) == 2
    for run in sweep.iterdir():
        if run.is_dir():
            assert_trained_once(run, steps=2)


# Fast checks of the pieces, in this process.


def hydra_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", ["joblib", "submitit_local", "submitit_slurm", "ray"])
def test_launcher_configs_compose(name):
    launch.register_resolvers()
    cfg = hydra_config(f"hydra/launcher={name}", "trainer=ddp", "trainer.devices=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.startswith("hydra_plugins.")
    if name == "joblib":
        assert launcher.n_jobs >= 1
    if name == "submitit_slurm":
        assert launcher.tasks_per_node == launcher.gpus_per_node == 4
        assert launcher.nodes == 1
    OmegaConf.to_container(launcher, resolve=True)


def test_repeated_names_are_numbered_by_job(monkeypatch):
    jobs = [["experiment=a", "bn=true"], ["experiment=b", "bn=true"], ["experiment=a", "bn=false"]]
    swept = ",".join(launch.swept_keys(jobs))
    assert launch.numbered_names(jobs, ["experiment"], swept) == {"1": "bn=true_2"}


def test_threads_are_divided_between_jobs_and_processes(monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 16)
    assert parallel.threads_per_process(4) == 4
    assert parallel.threads_per_process(4, 2) == 2
    assert parallel.threads_per_process(32) == 1
    monkeypatch.setenv(parallel.PARALLEL_JOBS_ENV, "3")
    assert parallel.launcher_jobs() == (3, False)
    monkeypatch.delenv(parallel.PARALLEL_JOBS_ENV)
    assert parallel.launcher_jobs() == (None, False)  # sequential: left alone
    ddp = OmegaConf.create({"strategy": {"_target_": "x.DDPStrategy"}, "devices": 2})
    assert parallel.processes_per_job(ddp) == 2
    assert parallel.processes_per_job(OmegaConf.create({"devices": 1})) == 1


def test_default_jobs(monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 16)
    monkeypatch.setattr(parallel, "gpu_count", lambda: 0)
    monkeypatch.setenv(parallel.SWEEP_SIZE_ENV, "6")
    assert parallel.default_jobs() == 6  # no idle workers: 6 jobs of 2 threads
    monkeypatch.setattr(parallel, "gpu_count", lambda: 2)
    assert parallel.default_jobs() == 2
    assert parallel.default_jobs(2) == 4  # two small jobs on each GPU


def test_running_jobs_hold_different_gpu_slots(tmp_path):
    slots, release, held = [], threading.Event(), threading.Barrier(3)

    def job():
        with parallel.gpu_slot(tmp_path, 2) as slot:
            slots.append(slot)
            held.wait()
            release.wait()

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    held.wait()
    assert sorted(slots) == [0, 1]
    release.set()
    for t in threads:
        t.join()


@needs("hydra_plugins.hydra_submitit_launcher", "submitit")
def test_slurm_launcher_asks_one_task_and_gpu_per_device(tmp_path, monkeypatch):
    """SLURM cannot run here: check the sbatch script the launcher's parameters give."""
    import submitit
    import submitit.slurm.slurm

    # submitit only looks for srun before it writes a script.
    monkeypatch.setattr(submitit.slurm.slurm.SlurmExecutor, "affinity", classmethod(lambda c: 2))
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    launch.register_resolvers()
    cfg = hydra_config(
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "trainer=ddp",
        "trainer.devices=4",
    )
    launcher = instantiate(cfg.hydra.launcher)
    # What SlurmLauncher.launch does with its parameters, up to sbatch.
    params = dict(launcher.params)
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=tmp_path, slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python train.py", "uid")
    for line in ("--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=60"):
        assert f"#SBATCH {line}" in script


def test_slurm_jobs_leave_requeueing_to_submitit(monkeypatch, tmp_path):
    monkeypatch.setattr(parallel, "launcher_jobs", lambda: (1, True))
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    cfg = OmegaConf.create({"trainer": {"devices": 1}})
    OmegaConf.set_struct(cfg, True)
    with parallel.job_context(cfg, tmp_path / "run", {}, []):
        (plugin,) = cfg.trainer.plugins
        assert plugin.auto_requeue is False
        assert plugin._target_.endswith("SLURMEnvironment")
        assert parallel.current_job.cfg is cfg
    assert parallel.current_job is None
