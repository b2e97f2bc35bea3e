"""How runs are launched: directory names, checks before launch, and the end of a sweep.

- ``unique_dir`` and ``run_name`` are OmegaConf resolvers used by ``conf/config.yaml``:
  run directories never collide and sweep runs are named by their values
  (``model=lenet5,bn=true,batch_size=64``), never by job number.
- ``Preflight`` is a Hydra callback that checks every job of a run or sweep
  before Hydra creates any directory; a bad value gets one line and exit 2.
- ``run_job`` wraps one training run so that a failing job of a sweep is
  recorded and the others go on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from bn_compare.parallel import SWEEP_SIZE_ENV, job_context

log = logging.getLogger(__name__)


def unique_dir(path: str) -> str:
    """The first of ``path``, ``path_2``, ``path_3``... that did not exist, reserved by creating it.

    ``mkdir`` without ``exist_ok`` is atomic, so two commands started in the same
    second still get different directories.
    """
    candidate, n = Path(path), 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return str(candidate)
        except FileExistsError:
            n += 1
            candidate = Path(f"{path}_{n}")


# Set by the sweep's preflight (in the launching process, inherited by job processes):
# the keys that vary across the sweep's jobs.
SWEPT_KEYS_ENV = "BN_COMPARE_SWEPT_KEYS"
# Set by ``resume=<dir>``: the run or sweep directory being continued.
RESUME_ENV = "BN_COMPARE_RESUME"
# Set by the preflight too: {job number: name} for jobs whose names would repeat.
RUN_NAMES_ENV = "BN_COMPARE_RUN_NAMES"
# Always part of a run's name when given: the architecture is what a comparison is about.
NAMED_KEYS = ("model",)


def base_name(overrides: ListConfig | list, exclude: ListConfig | list, swept: str | None) -> str:
    """``key=value,...`` of the swept keys (and the model); every override outside a sweep."""
    keep = set(swept.split(",")) | set(NAMED_KEYS) if swept is not None else None
    skip = set(exclude or [])
    parts = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        if key in skip or key.startswith("hydra.") or (keep is not None and key not in keep):
            continue
        value = {"True": "true", "False": "false"}.get(value, value)
        parts.append(f"{key}={value.replace('/', '_')}")
    return ",".join(parts) or "default"


def run_name(sweep_dir: str, overrides: ListConfig | list, exclude: ListConfig | list) -> str:
    """A sweep run's directory name: ``key=value,...`` in command-line order.

    It holds the swept keys (and the model), so the six runs of the mission
    command are ``model=lenet5,bn=true,batch_size=64`` and so on, whatever fixed
    options were added. Outside a checked sweep every override is used.

    In a checked sweep the preflight has already given a suffix to jobs whose
    names would repeat, so the name depends on the job alone, never on what is
    on disk: parallel jobs cannot race for a name, and every process of one job
    (the SLURM tasks of a DDP job, a requeued job) gets the same directory.
    """
    swept = os.environ.get(SWEPT_KEYS_ENV)
    name = base_name(overrides, exclude, swept)
    if swept is not None and HydraConfig.initialized():
        renamed = json.loads(os.environ.get(RUN_NAMES_ENV) or "{}")
        return renamed.get(str(HydraConfig.get().job.get("num")), name)
    if os.environ.get(RESUME_ENV):
        return name  # resuming a sweep: each job goes back to the directory it had
    # Two jobs can differ only in an unnamed key: keep both.
    candidate, n = name, 1
    while (Path(sweep_dir) / candidate).exists():
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def numbered_names(jobs: list[list[str]], exclude: list[str], swept: str) -> dict[str, str]:
    """``{job number: name_2, ...}`` for the jobs whose names repeat an earlier job's."""
    seen: dict[str, int] = {}
    renamed = {}
    for num, overrides in enumerate(jobs):
        name = base_name(overrides, exclude, swept)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            renamed[str(num)] = f"{name}_{seen[name]}"
    return renamed


def register_resolvers() -> None:
    from bn_compare.parallel import register_resolvers as register_parallel_resolvers

    register_parallel_resolvers()
    for name, fn in (("unique_dir", unique_dir), ("run_name", run_name)):
        if not OmegaConf.has_resolver(name):
            # Cached: resolving the same node again must not pick yet another name.
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


def resume_arguments(argv: list[str]) -> list[str]:
    """Turn ``resume=<dir>`` into the arguments that continue that run or sweep in place.

    The original overrides are read back from the directory; finished runs are
    skipped and unfinished ones continue from their last checkpoint.
    """
    found = [a for a in argv if a.startswith("resume=")]
    if not found:
        return argv
    path = Path(found[-1].split("=", 1)[1]).resolve()
    rest = [a for a in argv if not a.startswith("resume=") and a not in ("-m", "--multirun")]
    if (path / "multirun.yaml").is_file():
        hydra_cfg = OmegaConf.load(path / "multirun.yaml").hydra
        task, fixed, dir_key = list(hydra_cfg.overrides.task), ["-m"], "hydra.sweep.dir"
    elif (path / ".hydra" / "hydra.yaml").is_file():
        hydra_cfg = OmegaConf.load(path / ".hydra" / "hydra.yaml").hydra
        task, fixed, dir_key = list(hydra_cfg.overrides.task), [], "hydra.run.dir"
    else:
        fail(f"resume={path}: not a run or sweep directory (no .hydra/hydra.yaml or multirun.yaml)")
    hydra_overrides = [
        o
        for o in hydra_cfg.overrides.hydra
        if not o.startswith(("hydra.run.dir=", "hydra.sweep.dir="))
    ]
    os.environ[RESUME_ENV] = str(path)
    return [*fixed, *task, *hydra_overrides, f"{dir_key}={path}", *rest]


def check_composition(conf_dir: Path, argv: list[str]) -> None:
    """Compose a single run's config before Hydra does, to report a bad override in one line.

    Hydra's own report of an unknown config group option or key spans several lines;
    multiruns are checked job by job in ``Preflight``. Command-line flags are left to Hydra.
    """
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3"):
            compose("config", overrides=argv, return_hydra_config=True)
    except HydraException as err:
        fail(_composition_message(err))


def fail(message: str, code: int = 2) -> None:
    """One readable line on stderr and a non-zero exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def job_overrides(config: DictConfig, config_loader: Any = None) -> list[list[str]]:
    """The override lists of every job a multirun will launch (basic sweeper semantics)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    params = OmegaConf.select(config, "hydra.sweeper.params")
    if params:
        arguments = [f"{k}={v}" for k, v in params.items()] + arguments
    parsed = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]


def swept_keys(jobs: list[list[str]]) -> list[str]:
    """Keys whose value differs between jobs, in command-line order."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1]


def check_job(cfg: DictConfig, model_name: str | None, data: bool = True) -> None:
    from bn_compare.validate import ConfigError, check

    try:
        check(cfg, model_name, data=data)
    except ConfigError as err:
        fail(str(err))


class Preflight(Callback):
    """Check every job's config before Hydra creates a directory or trains anything."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        check_job(task, config.hydra.runtime.choices.get("model"))
        _reserve_output_dir(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kw) -> None:
        from hydra import compose
        from hydra.errors import HydraException

        try:
            jobs = job_overrides(config)
        except HydraException as err:
            fail(str(err).splitlines()[0])
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept_keys(jobs))
        exclude = OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys")
        renamed = numbered_names(jobs, list(exclude or []), os.environ[SWEPT_KEYS_ENV])
        os.environ[RUN_NAMES_ENV] = json.dumps(renamed)
        os.environ[SWEEP_SIZE_ENV] = str(len(jobs))  # the default n_jobs of parallel launchers
        # hydra.* overrides (such as hydra.searchpath) apply to every job's composition.
        hydra_overrides = list(config.hydra.overrides.hydra)
        tasks = []
        for overrides in jobs:
            try:
                cfg = compose(
                    config_name=config_name,
                    overrides=hydra_overrides + overrides,
                    return_hydra_config=True,
                )
            except HydraException as err:
                fail(_composition_message(err))
            task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            model = cfg.hydra.runtime.choices.get("model")
            check_job(task, model, data=False)
            tasks.append((task, model))
        # Data last: every value of every job is checked before anything is downloaded.
        for task, model in tasks:
            check_job(task, model)
        _reserve_output_dir(config, "hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        from bn_compare.report.results import failed_runs

        failures = failed_runs(sweep_dir)
        try:
            from bn_compare.report import write_report

            write_report([sweep_dir], sweep_dir)
            log.info("Sweep report written to %s", sweep_dir / "summary.md")
        except Exception as err:  # the report must never hide the runs' own outcome
            log.error("Could not write the sweep report: %s", err)
        if failures:
            for name, error in failures:
                print(f"failed: {name}: {error}", file=sys.stderr)
            fail(f"{len(failures)} job(s) of the sweep in {sweep_dir} failed", code=1)


def _reserve_output_dir(config: DictConfig, key: str) -> None:
    """Create the run or sweep directory now, the last check, so a failure is one line."""
    try:
        path = Path(str(OmegaConf.select(config, key)))
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except Exception as err:
        cause = err.__cause__ or err
        fail(f"cannot write the output directory ({key}): {cause}")


def _composition_message(err: Exception) -> str:
    """Hydra's composition error on one line: the problem and the known options."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return repr(err)
    options: list[str] = []
    if len(lines) > 1 and lines[1].startswith("Available options"):
        for line in lines[2:]:
            if line.startswith("Config search path"):
                break
            options.append(line)
    if options:
        return f"{lines[0]} (known: {', '.join(options)})"
    if len(lines) > 1 and lines[1].startswith("To append"):
        return f"{lines[0]} There is no such key; {lines[1][0].lower()}{lines[1][1:]}"
    return lines[0]


def run_job(cfg: DictConfig) -> float | None:
    """One training run. In a sweep, a failure is recorded and the sweep goes on."""
    from bn_compare.training.run import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = dict(hydra_cfg.runtime.choices)
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    resume = bool(os.environ.get(RESUME_ENV))
    if resume:
        previous = _previous_result(run_dir)
        if previous.get("status") in ("ok", "diverged"):
            log.info("Skipping %s: it already finished (%s)", run_dir, previous["status"])
            return previous.get("metrics", {}).get("val/acc_best")
    try:
        with job_context(cfg, run_dir, choices, overrides):  # threads, GPU, DDP processes
            result = train(cfg, run_dir, choices, overrides, resume=resume)
    except Exception as err:
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        _record_failure(run_dir, overrides, "failed", f"{type(err).__name__}: {first_line}")
        if not multirun:
            raise
        log.error("Job %s failed: %s", run_dir.name, first_line)
        return None
    except BaseException:  # Ctrl-C or a termination signal: resumable, so say so
        _record_failure(run_dir, overrides, "interrupted", "interrupted; continue with resume=")
        raise
    return result["metrics"].get("val/acc_best")


def _previous_result(run_dir: Path) -> dict:
    import json

    try:
        return json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return {}


def _record_failure(run_dir: Path, overrides: list[str], status: str, error: str) -> None:
    from bn_compare.training.run import write_result

    write_result(
        run_dir,
        {
            "status": status,
            "error": error,
            "traceback": traceback.format_exc(),
            "overrides": overrides,
        },
    )
