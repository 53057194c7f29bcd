"""Train with an mmdet or mmpretrain config (mmela's configs or your own).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--no-validate] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]

The flags are those of mmdet's and mmpretrain's ``tools/train.py``; the
config's ``default_scope`` decides which codebase's defaults apply (see
``mmela/cli/``). Before anything is written to the work dir the
config is checked (backbone, ELAPruningHook windows, checkpoints: that
``load_from`` / ``--resume`` files and the ``last_checkpoint`` pointer are
complete and fit the model, dataset paths); every problem found is printed
as one ``error:`` line, model first, and the run ends with exit status 2.
A config that is not valid Python gives its ``file:line`` the same way.
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli import (apply_train_args, build_runner,  # noqa: E402
                       load_config, parse_train_args, preflight,
                       prepare_stack, release_distributed, user_errors)


def main():
    args = parse_train_args()
    prepare_stack()
    with user_errors():
        cfg = load_config(args)
        apply_train_args(cfg, args)
        preflight(cfg, mode='train')
    runner = build_runner(cfg)
    with user_errors():  # a diverged run ends with one line, not a traceback
        runner.train()
    release_distributed()


if __name__ == '__main__':
    main()
