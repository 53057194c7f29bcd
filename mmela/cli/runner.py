"""Building and tearing down the Runner, and the hooks and metrics the
tools add to it."""
import argparse

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..compat import allow_cpu_distributed, allow_mmengine_checkpoint_types
from ..models import is_layer_attention_backbone


def prepare_stack() -> None:
    """What the 2024 OpenMMLab releases need on current torch and on
    machines without a GPU (:mod:`mmela.compat`): reading mmengine's own
    checkpoints with torch.load's weights-only default, and
    ``--launcher pytorch`` without CUDA. The tools call it first."""
    allow_mmengine_checkpoint_types()
    allow_cpu_distributed()


def build_runner(cfg: Config) -> Runner:
    if cfg.default_scope == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def release_distributed() -> None:
    """Tear the process group down before the interpreter exits. Without
    it, gloo's threads are destroyed at exit and a rank can abort (SIGABRT,
    'terminate called without an active exception') after a run that
    succeeded; mmengine never destroys the group itself."""
    if torch.distributed.is_available() and \
            torch.distributed.is_initialized():
        # A rank that leaves while another still talks to it (rank 0 saving
        # the last checkpoint, say) can break the other's connections.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class LogRetrievals(Hook):
    """Log, once the checkpoint is loaded, how many retrievals of the
    model's layer-attention backbone are on (a pruned checkpoint evaluates
    pruned), e.g. ``ELA: 13 of 18 retrievals on``."""

    priority = 'LOWEST'

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        backbone = getattr(model, 'backbone', None)
        if not is_layer_attention_backbone(backbone):
            return
        counts = backbone.num_retrievals()
        source = runner.cfg.get('load_from') or 'no checkpoint'
        runner.logger.info(f"ELA: {counts['on']} of {counts['total']} "
                           f'retrievals on ({source})')


def add_prediction_dump(runner: Runner, args: argparse.Namespace) -> None:
    """``--out``: append the scope's dump metric to the test evaluator."""
    if args.out is None or args.out_item == 'metrics':
        return
    if runner.cfg.default_scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))
