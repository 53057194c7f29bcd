"""ELAPruningHook: measure retrieval redundancy during training and prune.

The hook orchestrates; the maths lives in :mod:`mmela.pruning` and the
attention distributions in the backbone. Per window of epochs it:

1. switches attention recording on (only inside windows: outside them the
   backbone records nothing and costs nothing extra),
2. after every training iteration computes the padded KL divergence (paper
   Eq. 11) of every adjacent pair of retrieving blocks and adds it to a
   running sum (a pair whose distributions are not finite in an iteration is
   left out of that iteration and counted as skipped),
3. at the end of the window's last epoch averages the sums over iterations and
   ranks (all_reduce), maps them with :func:`mmela.pruning.keep_mask`, ANDs the
   result into the backbone's retrieval masks (a pruned retrieval never comes
   back), logs a table and writes ``<work_dir>/ela_pruning.json``.

Stages are named as the ResNet names them (``layer1``, ``layer2``, ...) in the
log and the JSON. Masks are buffers of the model, so checkpoints carry them;
the hook's own progress (every rank's sums of a window in progress, the
reports so far) travels in the checkpoint's ``ela_pruning`` entry, so
``--resume`` continues exactly (see :class:`ExactResumeHook` for the data
pipeline's part of that).
"""
import json
import math
import os
import os.path as osp
import tempfile
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.dist import (all_gather, all_reduce, get_rank, get_world_size,
                           is_main_process)
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop

from ..models.base_backbone import LayerAttentionResNetBase
from ..pruning import keep_mask, mapped_divergences, padded_kl
from ..registry import HOOKS
from .exact_resume_hook import ExactResumeHook

Window = Tuple[int, int]
# (stage, previous retrieving block, block whose retrieval the pair decides)
Pair = Tuple[int, int, int]

REPORT_FILE = 'ela_pruning.json'


class ELAPruningError(RuntimeError):
    """A window cannot be measured (the loss diverged, or a block had no
    usable attention distribution in the whole window); the message says
    which, where, and what to do, in one line."""


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


def format_windows(windows: Sequence[Window]) -> str:
    """``[(1, 3), (7, 7)]`` -> ``'1-3, 7'``."""
    return ', '.join(f'{a}' if a == b else f'{a}-{b}' for a, b in windows)


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

        # The window in progress, and this rank's measurements of it.
        self._window: Optional[Window] = None
        self._pairs: Optional[List[Pair]] = None
        self._kl_sum: Optional[np.ndarray] = None  # per pair
        self._used: Optional[np.ndarray] = None  # per pair: KLs in the sum
        self._iterations = 0
        self._warned_skip = False
        # Every rank's measurements at the end of the last epoch, which is
        # what a checkpoint (written at an epoch's end, or resumed from the
        # start of the epoch in progress) must hold.
        self._saved_progress: Optional[dict] = None
        self._reports: List[dict] = []
        self._resumed_from: Optional[int] = None  # epoch of the checkpoint

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
        backbone = self._backbone(runner)
        runner.logger.info(self._schedule_summary(runner, backbone))
        if self._resumed_from is not None and not any(
                isinstance(h, ExactResumeHook) for h in runner.hooks):
            runner.logger.warning(
                'ELAPruningHook: resumed without ExactResumeHook, so random '
                'data augmentation after the resume differs from an '
                'uninterrupted run and the masks may differ from its masks; '
                "add dict(type='ExactResumeHook') to custom_hooks for "
                'exact resumes')

    @staticmethod
    def _implementation(runner, backbone) -> str:
        """The implementation of layer attention that training runs (see
        :mod:`mmela.models.implementation`)."""
        if runner.cfg.get('compile'):
            return 'reference (compiled)'
        return backbone.layer_attention_impl()

    def _schedule_summary(self, runner, backbone) -> str:
        params = ''.join(f', {k}={v}' for k, v in self.params.items())
        counts = backbone.num_retrievals()
        per_stage = ', '.join(
            f'{name} {int(m.sum())}/{len(m)}'
            for name, m in zip(backbone.res_layers, backbone.get_masks()))
        line = (f'ELAPruningHook: windows (epochs) {format_windows(self.windows)}'
                f'; method={self.method}, tau={self.tau}{params}; retrievals '
                f"on: {counts['on']} of {counts['total']} ({per_stage}); "
                f'layer attention implementation: '
                f'{self._implementation(runner, backbone)}')
        if self._resumed_from is not None:
            line += (f'; resumed after epoch {self._resumed_from} with '
                     f'{len(self._reports)} window(s) done')
            if self._window is not None:
                line += (f', window {format_windows([self._window])} in '
                         f'progress')
        return line

    # ----------------------------------------------------------- windows
    def _window_of(self, epoch: int) -> Optional[Window]:
        for window in self.windows:
            if window[0] <= epoch <= window[1]:
                return window
        return None

    def before_train_epoch(self, runner) -> None:
        window = self._window_of(runner.epoch + 1)
        if window is None:
            return
        backbone = self._backbone(runner)
        if self._window is None:  # a new window (or one not restored)
            self._window = window
            self._pairs = self._adjacent_pairs(backbone.get_masks())
            self._kl_sum = np.zeros(len(self._pairs))
            self._used = np.zeros(len(self._pairs))
            self._iterations = 0
            self._warned_skip = False
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
        if self._window is None or self._window_of(runner.epoch + 1) is None:
            return
        self._check_loss(runner, batch_idx, outputs)
        backbone = self._backbone(runner)
        stages = backbone.get_attention_distributions()
        # One device-to-host copy per iteration for all distributions.
        flat = torch.cat([d for stage in stages for _, d in stage])
        flat = flat.double().cpu().numpy()
        dists, offset = {}, 0
        for stage_idx, stage in enumerate(stages):
            for block, dist in stage:
                dists[stage_idx, block] = flat[offset:offset + len(dist)]
                offset += len(dist)
        finite = {key: bool(np.isfinite(d).all()) for key, d in dists.items()}
        for i, (s, a, b) in enumerate(self._pairs):
            if finite[s, a] and finite[s, b]:
                self._kl_sum[i] += padded_kl(dists[s, a], dists[s, b],
                                             eps=self.eps)
                self._used[i] += 1
        self._iterations += 1
        if not self._warned_skip and not all(finite.values()):
            # Once per window: the table and the JSON count every skip.
            self._warned_skip = True
            s, block = next(key for key, ok in finite.items() if not ok)
            runner.logger.warning(
                f'ELAPruningHook: {self._where(runner, batch_idx)}: the '
                f'attention distribution of {backbone.res_layers[s]} block '
                f'{block} is not finite; its pairs are left out of this '
                f"iteration's KL and counted as skipped (further skips in "
                f'window {format_windows([self._window])} are only counted)')

    @staticmethod
    def _where(runner, batch_idx: int) -> str:
        return (f'epoch {runner.epoch + 1}, iteration {batch_idx + 1}/'
                f'{len(runner.train_dataloader)} (iteration {runner.iter + 1} '
                f'of the run)')

    def _check_loss(self, runner, batch_idx: int, outputs) -> None:
        """Stop with one line if the loss is not finite because training
        diverged. A non-finite loss with finite weights (e.g. a step AMP's
        loss scaler skipped) is not divergence: the measurement goes on.

        Decided by all ranks together (one small all_reduce), so that a
        loss that diverges on one rank stops every rank with the same line
        instead of leaving the others waiting in the next collective."""
        loss = outputs.get('loss') if isinstance(outputs, dict) else None
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        loss_bad = loss is not None and not math.isfinite(float(loss))
        weights_bad = loss_bad and not self._weights_finite(runner)
        world, rank = get_world_size(), get_rank()
        # Per rank: its loss is not finite; last: the weights are not.
        flags = torch.zeros(world + 1, dtype=torch.float64)
        flags[rank], flags[world] = float(loss_bad), float(weights_bad)
        all_reduce(flags, op='sum')
        if not flags[world]:
            return
        ranks = [r for r in range(world) if flags[r]]
        where = f'is {float(loss)}' if world == 1 else \
            f'is not finite on rank {", ".join(map(str, ranks))} of {world}'
        raise ELAPruningError(
            f'ELAPruningHook: the training loss diverged: loss {where} '
            f'at {self._where(runner, batch_idx)} and the model\'s weights '
            f'are no longer finite, so window '
            f'{format_windows([self._window])} cannot be measured; lower the '
            f'learning rate or clip gradients (optim_wrapper=dict(clip_grad='
            f'dict(max_norm=...)))')

    @staticmethod
    def _weights_finite(runner) -> bool:
        params = [p.detach() for p in runner.model.parameters()]
        return not params or bool(torch.stack(
            [torch.isfinite(p).all() for p in params]).all())

    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1
        window = self._window_of(epoch)
        if window is None:
            return
        backbone = self._backbone(runner)
        backbone.set_attention_recording(False)  # not while validating
        if epoch == window[1]:
            self._prune(runner, backbone, window)
            self._saved_progress = None
        else:
            self._saved_progress = self._gather_progress()

    # ----------------------------------------------------------- pruning
    def _progress_tensor(self) -> torch.Tensor:
        return torch.tensor([*self._kl_sum, *self._used, self._iterations],
                            dtype=torch.float64)

    def _prune(self, runner, backbone, window: Window) -> None:
        totals = self._progress_tensor()
        all_reduce(totals, op='sum')  # identical masks on every rank
        num = len(self._pairs)
        kl_sum, used = totals[:num].numpy(), totals[num:2 * num].numpy()
        iterations = int(totals[-1])
        if iterations == 0:
            raise RuntimeError(f'ELAPruningHook window {window}: no training '
                               f'iteration was measured')
        names = backbone.res_layers
        unusable = [f'{names[s]} block {b}'
                    for (s, _, b), n in zip(self._pairs, used) if n == 0]
        if unusable:
            raise ELAPruningError(
                f'ELAPruningHook: window {format_windows([window])} yielded '
                f'no usable measurement of {", ".join(unusable)}: the '
                f'attention distribution was not finite in all {iterations} '
                f'iterations, so its retrieval cannot be decided; check the '
                f'training log for a non-finite loss, or move the window')
        # What ran in the window, before its masks change.
        impl = self._implementation(runner, backbone)
        mean_kl = kl_sum / used
        keep = keep_mask(mean_kl, self.method, self.tau, **self.params)
        mapped = mapped_divergences(mean_kl, self.method, **self.params)

        masks = backbone.get_masks()
        for (stage, _, block), kept in zip(self._pairs, keep):
            masks[stage][block] &= bool(kept)
        backbone.set_masks(masks)

        counts = backbone.num_retrievals()
        skipped = [iterations - int(n) for n in used]
        report = dict(
            window=list(window), epoch=window[1], method=self.method,
            tau=self.tau, params=self.params,
            iterations=iterations, skipped=sum(skipped),
            stages=list(names),
            pairs=[dict(stage=names[s], previous_block=a, block=b,
                        kl=float(kl), mapped=float(m), kept=bool(k),
                        skipped=n)
                   for (s, a, b), kl, m, k, n in zip(self._pairs, mean_kl,
                                                      mapped, keep, skipped)],
            retrievals_on=counts['on'], retrievals_total=counts['total'],
            masks=[m.int().tolist() for m in backbone.get_masks()],
            layer_attention_impl=impl)
        self._reports.append(report)
        runner.logger.info(format_report(report))
        if is_main_process():
            write_json_atomic(osp.join(runner.work_dir, REPORT_FILE),
                              self._reports)
        self._window, self._pairs, self._kl_sum, self._used = (None, ) * 4
        self._iterations = 0

    # ---------------------------------------------------------- resuming
    def _gather_progress(self) -> dict:
        """Every rank's sums so far (a collective: every rank calls it)."""
        ranks = all_gather(self._progress_tensor())
        num = len(self._pairs)
        return dict(window=list(self._window), pairs=self._pairs,
                    ranks=[dict(kl_sum=t[:num].tolist(),
                                used=t[num:2 * num].tolist(),
                                iterations=int(t[-1])) for t in ranks])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['ela_pruning'] = dict(progress=self._saved_progress,
                                         reports=self._reports)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # mmengine calls this for ``load_from`` too: a new run that starts
        # from another run's weights keeps their masks but not its progress.
        state = checkpoint.get('ela_pruning')
        if state is None or not getattr(runner, '_resume', False):
            return
        epoch = checkpoint['meta']['epoch']  # epochs completed
        self._resumed_from = epoch
        self._reports = list(state['reports'])
        self._window = None
        progress = state['progress'] if 'progress' in state else \
            _legacy_progress(state, epoch, self._window_of)
        if progress is not None:
            self._restore_progress(runner, progress, epoch)
        done = {tuple(r['window']) for r in self._reports}
        for first, last in self.windows:
            window = format_windows([(first, last)])
            if last <= epoch and (first, last) not in done:
                runner.logger.warning(
                    f'ELAPruningHook: window {window} ends at or before epoch '
                    f'{epoch}, where the resumed checkpoint was written, and '
                    f'was not measured by the run that wrote it; it is '
                    f'skipped')
            elif first <= epoch < last and self._window != (first, last):
                runner.logger.warning(
                    f'ELAPruningHook: window {window} began before epoch '
                    f'{epoch}, where the resumed checkpoint was written, '
                    f'without measurements in it; it averages epochs '
                    f'{epoch + 1}-{last} only')

    def _restore_progress(self, runner, progress: dict, epoch: int) -> None:
        """Continue the checkpoint's window if the configured windows still
        have it, else discard its measurements with a warning: they belong to
        a window the current config does not measure."""
        old = tuple(progress['window'])
        window = next((w for w in self.windows
                       if w[0] == old[0] and w[1] > epoch), None)
        ranks = progress['ranks']
        measured = sum(r['iterations'] for r in ranks)
        if window is None:
            runner.logger.warning(
                f'ELAPruningHook: the checkpoint was written after epoch '
                f'{epoch}, inside window {format_windows([old])} ({measured} '
                f'iterations measured), which the configured windows '
                f'{format_windows(self.windows)} do not continue; those '
                f'measurements are discarded')
            return
        if len(ranks) == get_world_size():
            mine = ranks[get_rank()]
        else:
            # Same sums, one rank holding them: the window mean is the same
            # up to float rounding (a different world size changes the data
            # order anyway).
            runner.logger.warning(
                f'ELAPruningHook: the checkpoint holds the sums of '
                f'{len(ranks)} ranks, this run has {get_world_size()}; rank '
                f'0 continues with all of them')
            mine = {k: (np.sum([r[k] for r in ranks], axis=0) if get_rank() ==
                        0 else np.zeros_like(ranks[0][k], dtype=np.float64))
                    for k in ('kl_sum', 'used', 'iterations')}
        self._window = window
        self._pairs = [tuple(p) for p in progress['pairs']]
        self._kl_sum = np.asarray(mine['kl_sum'], dtype=np.float64)
        self._used = np.asarray(mine['used'], dtype=np.float64)
        self._iterations = int(mine['iterations'])
        self._saved_progress = dict(progress, window=list(window))


def _legacy_progress(state: dict, epoch: int, window_of) -> Optional[dict]:
    """The progress of a checkpoint written before mmela saved every rank's
    sums (rank 0's only, in the window that holds ``epoch``)."""
    if state.get('pairs') is None or window_of(epoch) is None:
        return None
    iterations = state['iterations']
    return dict(window=list(window_of(epoch)), pairs=state['pairs'],
                ranks=[dict(kl_sum=state['kl_sum'],
                            used=[iterations] * len(state['kl_sum']),
                            iterations=iterations)])


def format_report(report: dict) -> str:
    """A readable table of one window's pruning decisions."""
    lines = [
        f"ELA pruning, window epochs {report['window'][0]}-"
        f"{report['window'][1]} ({report['iterations']} iterations, "
        f"{report.get('skipped', 0)} pair measurements skipped as not "
        f"finite, method={report['method']}, tau={report['tau']}):",
        f"{'stage':>8} {'block':>5} {'mean KL':>10} {'mapped':>8} "
        f"{'skipped':>7}  decision"
    ]
    for pair in report['pairs']:
        lines.append(f"{pair['stage']:>8} {pair['block']:>5} "
                     f"{pair['kl']:>10.4g} {pair['mapped']:>8.4f} "
                     f"{pair.get('skipped', 0):>7}  "
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
