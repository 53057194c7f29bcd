"""Test (and evaluate) a checkpoint with an mmdet or mmpretrain config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--out-item {pred,metrics}] [--show-dir DIR] [--show] [--amp]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

The flags are those of mmdet's and mmpretrain's ``tools/test.py``; the
config's ``default_scope`` decides how ``--out`` and ``--show-dir`` work
(see ``mmela/cli/``). A pruned ELA checkpoint evaluates as pruned:
the retrieval masks are part of the weights, and the log says how many
retrievals are on. Before anything runs, the config, the data paths and the
checkpoint are checked: a missing, truncated or empty checkpoint, or one that
does not fit the config's model (another depth, no layer attention), ends the
run with ``error:`` lines and exit status 2 instead of evaluating it.
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import mmengine  # noqa: E402

from mmela.cli import (LogRetrievals, add_prediction_dump,  # noqa: E402
                       apply_test_args, build_runner, load_config,
                       parse_test_args, preflight, prepare_stack,
                       release_distributed, user_errors)


def main():
    args = parse_test_args()
    prepare_stack()
    with user_errors():
        cfg = load_config(args)
        apply_test_args(cfg, args)
        preflight(cfg, mode='test')
    runner = build_runner(cfg)
    add_prediction_dump(runner, args)
    runner.register_hook(LogRetrievals())
    metrics = runner.test()
    if args.out is not None and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)
    release_distributed()


if __name__ == '__main__':
    main()
