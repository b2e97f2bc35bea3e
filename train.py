"""Train networks with and without batch normalization.

python train.py -m model=lenet5 bn=true,false batch_size=32,64,128
python train.py --models        # the available architectures and their sizes
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from bn_compare.launch import check_composition, register_resolvers, resume_arguments, run_job

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    if "--models" in sys.argv[1:]:
        from bn_compare.models.catalog import print_catalog

        print_catalog(Path(__file__).parent / "conf")
    else:
        # resume=<run or sweep dir> continues it in place with its original overrides.
        sys.argv[1:] = resume_arguments(sys.argv[1:])
        check_composition(Path(__file__).parent / "conf", sys.argv[1:])
        main()
