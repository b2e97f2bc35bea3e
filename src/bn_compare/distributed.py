"""Data-parallel training of one job over several devices (``trainer=ddp``).

Lightning's DDP starts the processes of ranks 1..N-1 by running the command line
again with ``hydra.run.dir`` pointing at the run directory. In a sweep that is
wrong: the command line is the whole sweep (``-m bn=true,false ...``), and inside
a joblib or submitit worker it is not ``train.py`` at all. The strategy here
starts ``python -m bn_compare.distributed`` instead: it trains exactly the job of
the process that started it, from its composed config, and never runs Hydra, so
it creates no run directory, no log file and no ``.hydra/`` copy. Only rank 0
writes logs, checkpoints and ``result.json``.

When the processes are created by the cluster (SLURM with ``tasks_per_node`` =
devices), every task runs the job itself and this launcher is not used.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import OmegaConf

from bn_compare import parallel

# Environment variable carrying the job to the processes of ranks > 0.
JOB_ENV = "BN_COMPARE_DDP_JOB"


class JobProcessLauncher(_SubprocessScriptLauncher):
    """Starts ranks 1..N-1 as ``python -m bn_compare.distributed`` training the current job."""

    def _call_children_scripts(self) -> None:
        job = parallel.current_job
        if job is None:  # not started through train.py's job: Lightning's own way
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        spec = json.dumps(
            {
                "config": OmegaConf.to_container(job.cfg, resolve=True),
                "run_dir": str(job.run_dir),
                "choices": job.choices,
                "overrides": job.overrides,
            }
        )
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank), JOB_ENV: spec}
            command = [sys.executable, "-m", "bn_compare.distributed"]
            self.procs.append(subprocess.Popen(command, env=child_env))


class DDPStrategy(LightningDDPStrategy):
    """Lightning's DDP, with processes that train the current job of a run or sweep."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = JobProcessLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )

    def setup(self, trainer) -> None:
        if self._layer_sync is not None and self.root_device.type == "cpu":
            raise ValueError(
                "trainer.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm does not run on "
                "CPU. Use it with trainer.accelerator=gpu, or set trainer.sync_batchnorm=false"
            )
        super().setup(trainer)


def main() -> None:
    """Entry point of the processes of ranks > 0 (started by ``JobProcessLauncher``)."""
    spec = json.loads(os.environ.pop(JOB_ENV))
    logging.basicConfig(level=logging.WARNING)
    from bn_compare.launch import RESUME_ENV
    from bn_compare.training.run import train

    cfg = OmegaConf.create(spec["config"])
    resume = bool(os.environ.get(RESUME_ENV))  # as in run_job: every rank resumes, or none
    train(cfg, Path(spec["run_dir"]), spec["choices"], spec["overrides"], resume=resume)


if __name__ == "__main__":
    main()
