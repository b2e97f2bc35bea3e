"""Running several jobs at once: how many, how many threads each, which GPU each uses.

``job_context`` sets up every job from the launcher that runs it (or from
``BN_COMPARE_PARALLEL_JOBS``, the number of jobs sharing one machine, when set):

- each job gets ``cores // (jobs x processes per job)`` torch threads, so parallel
  jobs (and the processes of a DDP job) never oversubscribe the CPU;
- on a machine with several GPUs, each running job holds a slot (a lock file in
  the sweep directory) and slot ``k`` trains on GPU ``k % gpus``; with more slots
  than GPUs, small jobs share a GPU;
- under SLURM (``hydra/launcher=submitit_slurm``) Lightning's own auto-requeue is
  turned off: submitit requeues the job, so a preempted job is not requeued twice.

The job being trained is also recorded, so that the extra processes of a DDP run
(``bn_compare.distributed``) train exactly this job.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# Jobs running at the same time on one machine; set by the launcher configs.
PARALLEL_JOBS_ENV = "BN_COMPARE_PARALLEL_JOBS"
# Number of jobs in the sweep; set by the preflight before the launcher starts.
SWEEP_SIZE_ENV = "BN_COMPARE_SWEEP_SIZE"

# The launcher configs in conf/hydra/launcher/ carry the plugins' own names, so Hydra
# validates them against the plugins' schemas (they hold every field, so they also work
# where that matching is gone); its deprecation notice about that matching is noise here.
warnings.filterwarnings(
    "ignore", message=r"(?s).*'hydra/launcher/\w+' is validated against ConfigStore schema"
)


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask: a SLURM or cgroup allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_jobs(per_gpu: int | str = 1) -> int:
    """``n_jobs`` for a local parallel sweep.

    With GPUs: ``per_gpu`` jobs on each GPU. Without: one job per core. Never
    more than the sweep has jobs, so a short sweep on a large machine gives each
    job more threads instead of idle workers.
    """
    gpus = gpu_count()
    jobs = gpus * max(1, int(per_gpu)) if gpus else available_cores()
    size = int(os.environ.get(SWEEP_SIZE_ENV) or 0)
    return max(1, min(jobs, size) if size else jobs)


def launcher_jobs() -> tuple[int | None, bool]:
    """(jobs sharing this machine, submitit requeues) for the launcher running this job.

    ``BN_COMPARE_PARALLEL_JOBS`` wins when set; otherwise it follows from the launcher:
    joblib runs ``n_jobs`` at once, submitit's local executor the whole sweep, a SLURM
    job owns its allocation. ``None``: leave threads alone (sequential runs, Ray, which
    sets ``OMP_NUM_THREADS`` itself).
    """
    from hydra.core.hydra_config import HydraConfig

    target, n_jobs = "", None
    if HydraConfig.initialized():
        launcher = HydraConfig.get().launcher
        target = str(launcher.get("_target_", ""))
        n_jobs = launcher.get("n_jobs")
    slurm = target.endswith("submitit_launcher.SlurmLauncher")
    value = os.environ.get(PARALLEL_JOBS_ENV)
    size = int(os.environ.get(SWEEP_SIZE_ENV) or 0) or None
    if value:
        jobs = int(value)
    elif target.endswith("JoblibLauncher") and n_jobs is not None:
        jobs = int(n_jobs)
        if jobs < 0:  # joblib: -1 is all cores, -2 all but one...
            jobs = available_cores() + 1 + jobs
        jobs = min(jobs, size) if size else jobs
    elif target.endswith("submitit_launcher.LocalLauncher"):
        jobs = size or 1
    elif slurm:
        jobs = 1
    else:
        return None, False
    return max(1, jobs), slurm


def processes_per_job(trainer: DictConfig) -> int:
    """Processes one job starts on this machine (DDP: one per device)."""
    strategy = trainer.get("strategy")
    target = strategy.get("_target_", "") if isinstance(strategy, DictConfig) else str(strategy)
    devices = trainer.get("devices")
    if "ddp" in target.lower() and isinstance(devices, int) and devices > 1:
        return devices
    return 1


def threads_per_process(jobs: int, processes: int = 1) -> int:
    return max(1, available_cores() // (jobs * processes))


@dataclass
class Job:
    """What the extra processes of a DDP run need to train the same job."""

    cfg: DictConfig
    run_dir: Path
    choices: dict[str, str]
    overrides: list[str]


# The job this process is training (set by ``job_context``).
current_job: Job | None = None


@contextlib.contextmanager
def gpu_slot(slots_dir: Path, slots: int) -> Iterator[int]:
    """Hold the first free slot of ``slots`` (an exclusive lock) for the duration."""
    slots_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(slots):
            handle = open(slots_dir / f"slot{slot}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            try:
                yield slot
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        # More jobs than slots (n_jobs changed by hand): wait for one to finish.
        handle = open(slots_dir / "slot0.lock", "w")  # noqa: SIM115
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.close()


# Environment a job may change: Lightning's DDP variables and the thread count.
JOB_ENV_KEYS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "OMP_NUM_THREADS",
)


def _restore_environment(saved: dict[str, str | None]) -> None:
    """Undo what one job set, so that the next job of a sweep in this process starts anew.

    Otherwise a second DDP job would find ``LOCAL_RANK`` set, take its processes
    for created by someone else and wait for them forever.
    """
    import torch.distributed as dist

    if saved.get("LOCAL_RANK") is None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _uses_gpu(trainer: DictConfig) -> bool:
    return str(trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")


@contextlib.contextmanager
def job_context(
    cfg: DictConfig, run_dir: Path, choices: dict[str, str], overrides: list[str]
) -> Iterator[None]:
    """Set up one job of a sweep: threads, GPU, cluster environment; record the job."""
    global current_job
    stack = contextlib.ExitStack()
    stack.callback(_restore_environment, {k: os.environ.get(k) for k in JOB_ENV_KEYS})
    with stack:
        jobs, submitit_requeues = launcher_jobs()
        if jobs is not None:
            # Processes that SLURM started have an allocation each.
            external = int(os.environ.get("SLURM_NTASKS") or 1) > 1
            threads = threads_per_process(jobs, 1 if external else processes_per_job(cfg.trainer))
            import torch

            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
            # Also read by Lightning's DDP launcher and inherited by its processes.
            os.environ["OMP_NUM_THREADS"] = str(threads)
            gpus = gpu_count() if jobs > 1 and _uses_gpu(cfg.trainer) else 0
            if gpus > 1 and cfg.trainer.get("devices") in (1, "1"):
                slot = stack.enter_context(gpu_slot(run_dir.parent / ".gpu_slots", jobs))
                with open_dict(cfg):
                    cfg.trainer.devices = [slot % gpus]
                log.info("Job %s: GPU %d, %d threads", run_dir.name, slot % gpus, threads)
        if submitit_requeues and "SLURM_JOB_ID" in os.environ:
            plugins = cfg.trainer.get("plugins") or []
            if not plugins:
                with open_dict(cfg):
                    cfg.trainer.plugins = [
                        {
                            "_target_": "lightning.pytorch.plugins.environments.SLURMEnvironment",
                            "auto_requeue": False,
                        }
                    ]
        current_job = Job(cfg, Path(run_dir), dict(choices), list(overrides))
        try:
            yield
        finally:
            current_job = None


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("parallel_jobs"):
        OmegaConf.register_new_resolver("parallel_jobs", default_jobs, use_cache=True)
