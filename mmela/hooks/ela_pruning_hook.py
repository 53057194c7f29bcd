"""ELAPruningHook: measure retrieval redundancy during training and prune.

The hook orchestrates; the maths lives in :mod:`mmela.pruning` and the
attention distributions in the backbone. Per window of epochs it:

1. switches attention recording on (only inside windows: outside them the
   backbone records nothing and costs nothing extra),
2. after every training iteration computes the padded KL divergence (paper
   Eq. 11) of every adjacent pair of retrieving blocks and adds it to a
   running sum,
3. at the end of the window's last epoch averages the sums over iterations and
   ranks (all_reduce), maps them with :func:`mmela.pruning.keep_mask`, ANDs the
   result into the backbone's retrieval masks (a pruned retrieval never comes
   back), logs a table and writes ``<work_dir>/ela_pruning.json``.

Masks are buffers of the model, so checkpoints carry them; the hook's own
progress (sums of a window in progress, the reports so far) travels in the
checkpoint's ``ela_pruning`` entry, so ``--resume`` continues exactly.
"""
import json
import os
import os.path as osp
import tempfile
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop

from ..models.base_backbone import LayerAttentionResNetBase
from ..pruning import keep_mask, mapped_divergences, padded_kl
from ..registry import HOOKS

Window = Tuple[int, int]
# (stage, previous retrieving block, block whose retrieval the pair decides)
Pair = Tuple[int, int, int]

REPORT_FILE = 'ela_pruning.json'


def check_backbone(backbone, owner: str = 'the model') -> None:
    """Raise ValueError unless ``backbone`` has layer attention to prune."""
    if isinstance(backbone, LayerAttentionResNetBase) and \
            backbone.layer_attention is not None:
        return
    if backbone is None:
        name = f'{owner} without a backbone'
    elif isinstance(backbone, LayerAttentionResNetBase):
        name = f'{type(backbone).__name__} with layer_attention=None'
    else:
        name = type(backbone).__name__
    raise ValueError(
        f'ELAPruningHook needs a backbone with layer attention, got {name}: '
        f"use ELAResNet or ELAResNetCIFAR with layer_attention='light' or "
        f"'base'")


def parse_windows(windows: Sequence[Union[int, Sequence[int]]]) -> List[Window]:
    """``[1, (3, 5)]`` -> ``[(1, 1), (3, 5)]``, checked: 1-based, each
    ``first <= last``, in order and not overlapping."""
    if isinstance(windows, (int, str)) or not windows:
        raise ValueError(f'windows must be a non-empty list of epochs or '
                         f'(first_epoch, last_epoch) pairs, got {windows!r}')
    parsed = []
    for window in windows:
        if isinstance(window, int):
            window = (window, window)
        if len(window) != 2 or not all(isinstance(e, int) for e in window):
            raise ValueError(f'each window must be an epoch or a '
                             f'(first_epoch, last_epoch) pair, got {window!r}')
        first, last = window
        if not 1 <= first <= last:
            raise ValueError(f'window {tuple(window)}: epochs are 1-based and '
                             f'first_epoch <= last_epoch')
        if parsed and first <= parsed[-1][1]:
            raise ValueError(f'windows must be in order and must not '
                             f'overlap: {parsed[-1]} then {tuple(window)}')
        parsed.append((first, last))
    return parsed


@HOOKS.register_module()
class ELAPruningHook(Hook):
    """Prune redundant layer-attention retrievals while training (ELA).

    Args:
        windows (list[int | tuple[int, int]]): Measurement windows,
            ``(first_epoch, last_epoch)`` 1-based and inclusive as in the
            paper; an int ``e`` means ``(e, e)``. Masks are updated at the end
            of each window's last epoch. E.g. ``[1, 7]`` for COCO 1x,
            ``[(1, 3), (51, 53)]`` for ImageNet.
        method (str): Mapping from divergences to masks, one of
            :data:`mmela.pruning.PRUNING_METHODS`. Default: 'ebqm'.
        tau (float): Threshold on the mapped divergences (the paper's tau or
            mu). Default: 0.2.
        gamma (float): EBQM quantile: only divergences at or below the
            gamma-quantile are pruning candidates. The paper gives no value.
            Default: 0.5.
        alpha (float): Beta CDF shape alpha of EBQM. Default: 2.0.
        beta (float): Beta CDF shape beta of EBQM. Default: 5.0.
        eps (float): Padding of the shorter distribution in Eq. 11.
            Default: 1e-8.
        **method_params: Parameters of other methods (e.g. ``num_pruned`` for
            'fixed', ``mean``/``std`` for 'ebqm-normal'); see
            :func:`mmela.pruning.keep_mask`. ``gamma`` goes to every EBQM
            variant, ``alpha``/``beta`` to 'ebqm' only.
    """

    priority = 'NORMAL'  # before CheckpointHook, so checkpoints hold masks

    def __init__(self,
                 windows: Sequence[Union[int, Sequence[int]]],
                 method: str = 'ebqm',
                 tau: float = 0.2,
                 gamma: float = 0.5,
                 alpha: float = 2.0,
                 beta: float = 5.0,
                 eps: float = 1e-8,
                 **method_params):
        self.windows = parse_windows(windows)
        if not (isinstance(eps, float) and 0 < eps < 1):
            raise ValueError(f'eps must be a float in (0, 1), got {eps!r}')
        self.method = method
        self.tau = tau
        self.eps = eps
        params = dict(method_params)
        if method.startswith('ebqm'):
            params.setdefault('gamma', gamma)
        if method == 'ebqm':
            params.update(alpha=alpha, beta=beta)
        self.params = params
        # Fail on bad settings now, not at the end of the first window.
        keep_mask(np.array([0.1, 0.2, 0.3]), method, tau, **params)

        self._pairs: Optional[List[Pair]] = None  # window in progress
        self._kl_sum: Optional[np.ndarray] = None
        self._iterations = 0
        self._reports: List[dict] = []

    # ------------------------------------------------------------ checks
    def check_schedule(self, max_epochs: int) -> None:
        """Raise ValueError if a window ends after ``max_epochs``."""
        last = self.windows[-1]
        if last[1] > max_epochs:
            raise ValueError(
                f'window {last} ends after the last epoch '
                f'(train_cfg.max_epochs={max_epochs}); move the window or '
                f'lengthen the schedule')

    @staticmethod
    def _backbone(runner) -> LayerAttentionResNetBase:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        backbone = getattr(model, 'backbone', None)
        check_backbone(backbone, owner=type(model).__name__)
        return backbone

    def before_train(self, runner) -> None:
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            raise ValueError(
                f'ELAPruningHook works with epoch-based training only '
                f"(train_cfg=dict(by_epoch=True, ...)), got "
                f'{type(runner.train_loop).__name__}')
        try:
            self.check_schedule(runner.max_epochs)
        except ValueError as e:
            raise ValueError(f'ELAPruningHook {e}') from None
        self._backbone(runner)

    # ----------------------------------------------------------- windows
    def _window_of(self, epoch: int) -> Optional[Window]:
        for window in self.windows:
            if window[0] <= epoch <= window[1]:
                return window
        return None

    def before_train_epoch(self, runner) -> None:
        if self._window_of(runner.epoch + 1) is None:
            return
        backbone = self._backbone(runner)
        if self._pairs is None:  # a new window (or one not restored)
            self._pairs = self._adjacent_pairs(backbone.get_masks())
            self._kl_sum = np.zeros(len(self._pairs))
            self._iterations = 0
        backbone.set_attention_recording(True)

    @staticmethod
    def _adjacent_pairs(masks: List[torch.Tensor]) -> List[Pair]:
        """Consecutive retrieving blocks of each stage."""
        pairs = []
        for stage, mask in enumerate(masks):
            on = torch.nonzero(mask).flatten().tolist()
            pairs += [(stage, a, b) for a, b in zip(on, on[1:])]
        return pairs

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self._pairs is None or self._window_of(runner.epoch + 1) is None:
            return
        stages = self._backbone(runner).get_attention_distributions()
        # One device-to-host copy per iteration for all distributions.
        flat = torch.cat([d for stage in stages for _, d in stage])
        flat = flat.double().cpu().numpy()
        dists, offset = {}, 0
        for stage_idx, stage in enumerate(stages):
            for block, dist in stage:
                dists[stage_idx, block] = flat[offset:offset + len(dist)]
                offset += len(dist)
        self._kl_sum += [
            padded_kl(dists[s, a], dists[s, b], eps=self.eps)
            for s, a, b in self._pairs
        ]
        self._iterations += 1

    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1
        window = self._window_of(epoch)
        if window is None:
            return
        backbone = self._backbone(runner)
        backbone.set_attention_recording(False)  # not while validating
        if epoch == window[1]:
            self._prune(runner, backbone, window)

    # ----------------------------------------------------------- pruning
    def _prune(self, runner, backbone, window: Window) -> None:
        totals = torch.tensor([*self._kl_sum, self._iterations],
                              dtype=torch.float64)
        all_reduce(totals, op='sum')  # identical masks on every rank
        if totals[-1] == 0:
            raise RuntimeError(f'ELAPruningHook window {window}: no training '
                               f'iteration was measured')
        mean_kl = (totals[:-1] / totals[-1]).numpy()
        keep = keep_mask(mean_kl, self.method, self.tau, **self.params)
        mapped = mapped_divergences(mean_kl, self.method, **self.params)

        masks = backbone.get_masks()
        for (stage, _, block), kept in zip(self._pairs, keep):
            masks[stage][block] &= bool(kept)
        backbone.set_masks(masks)

        counts = backbone.num_retrievals()
        report = dict(
            window=list(window), epoch=window[1], method=self.method,
            tau=self.tau, params=self.params,
            iterations=int(totals[-1]),
            pairs=[dict(stage=s, previous_block=a, block=b, kl=float(kl),
                        mapped=float(m), kept=bool(k))
                   for (s, a, b), kl, m, k in zip(self._pairs, mean_kl,
                                                   mapped, keep)],
            retrievals_on=counts['on'], retrievals_total=counts['total'],
            masks=[m.int().tolist() for m in backbone.get_masks()])
        self._reports.append(report)
        runner.logger.info(format_report(report))
        if is_main_process():
            write_json_atomic(osp.join(runner.work_dir, REPORT_FILE),
                              self._reports)
        self._pairs, self._kl_sum, self._iterations = None, None, 0

    # ---------------------------------------------------------- resuming
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['ela_pruning'] = dict(
            pairs=self._pairs,
            kl_sum=None if self._kl_sum is None else self._kl_sum.tolist(),
            iterations=self._iterations,
            reports=self._reports)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # mmengine calls this for ``load_from`` too: a new run that starts
        # from another run's weights keeps their masks but not its progress.
        state = checkpoint.get('ela_pruning')
        if state is None or not getattr(runner, '_resume', False):
            return
        self._pairs = None if state['pairs'] is None else \
            [tuple(p) for p in state['pairs']]
        self._kl_sum = None if state['kl_sum'] is None else \
            np.asarray(state['kl_sum'], dtype=np.float64)
        self._iterations = state['iterations']
        self._reports = list(state['reports'])


def format_report(report: dict) -> str:
    """A readable table of one window's pruning decisions."""
    lines = [
        f"ELA pruning, window epochs {report['window'][0]}-"
        f"{report['window'][1]} ({report['iterations']} iterations, "
        f"method={report['method']}, tau={report['tau']}):",
        f"{'stage':>5} {'block':>5} {'mean KL':>10} {'mapped':>8}  decision"
    ]
    for pair in report['pairs']:
        lines.append(f"{pair['stage']:>5} {pair['block']:>5} "
                     f"{pair['kl']:>10.4g} {pair['mapped']:>8.4f}  "
                     f"{'kept' if pair['kept'] else 'pruned'}")
    lines.append(f"retrievals on: {report['retrievals_on']} of "
                 f"{report['retrievals_total']}")
    return '\n'.join(lines)


def write_json_atomic(path: str, data) -> None:
    """Write to a temporary file beside ``path``, then rename over it, so a
    reader never sees a half-written report."""
    directory = osp.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.ela_pruning.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private to its owner
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
