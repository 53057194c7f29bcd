"""Run by test_two_processes_with_gloo_apply_identical_masks under
``torch.distributed.run`` with 2 processes: trains with a window on epoch 1
(pruning 3 retrievals), then keeps training under DDP."""
import json
import sys

from mmela.cli import release_distributed
from toy_runner import build_runner


def main(work_dir):
    runner = build_runner(
        work_dir=work_dir, max_epochs=3, depth=38, launcher='pytorch',
        hooks=[dict(type='ELAPruningHook', windows=[1], method='fixed',
                    num_pruned=3)])
    runner.train()
    backbone = runner.model.module.backbone
    result = dict(
        masks=[m.int().tolist() for m in backbone.get_masks()],
        retrievals_on=backbone.num_retrievals()['on'],
        epochs_done=runner.epoch,
        find_unused_parameters=runner.model.find_unused_parameters,
        weight_checksum=float(sum(p.double().sum()
                                  for p in runner.model.parameters())))
    with open(f'{work_dir}/rank{runner.rank}.json', 'w') as f:
        json.dump(result, f)
    release_distributed()


if __name__ == '__main__':
    main(sys.argv[1])
