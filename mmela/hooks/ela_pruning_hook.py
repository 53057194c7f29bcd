"""ELAPruningHook: measure retrieval redundancy during training and prune.

The hook is the mmengine glue around :mod:`mmela.pruning`: it decides when
the backbone records attention (inside measurement windows only), feeds each
iteration's distributions to a :class:`~mmela.pruning.WindowMeasurement`,
adds the ranks' sums together at the end of a window, applies
:func:`~mmela.pruning.decide` to the backbone's masks, and keeps its
progress in checkpoints so that ``--resume`` continues exactly. Stages are
named as the ResNet names them (``layer1``, ...) in the log and in
``<work_dir>/ela_pruning.json`` (:mod:`mmela.pruning.report`).
"""
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dist import (all_gather, all_reduce, get_rank, get_world_size,
                           is_main_process)
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop

from ..compat import allow_mmengine_checkpoint_types
from ..models import LayerAttentionBackbone, check_backbone
from ..pruning import (REPORT_FILE, Window, WindowMeasurement,
                       adjacent_pairs, check_method_arguments, decide,
                       format_report, format_windows, keep_mask,
                       parse_windows, window_of, window_report, write_reports)
from ..pruning.progress import (legacy_progress, progress_entry,
                                resume_warnings, restore_progress)
from ..registry import HOOKS
from .divergence import diverged
from .exact_resume_hook import ExactResumeHook


class ELAPruningError(RuntimeError):
    """A window cannot be measured (the loss diverged, or a block had no
    usable attention distribution in the whole window); the message says
    which, where, and what to do, in one line."""


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
        exact_resume (bool): Make ``--resume`` after a crash end with the
            uninterrupted run's masks: registers :class:`ExactResumeHook`
            when the config has none (one log line says so). Default: True.
        **method_params: Parameters of other methods (e.g. ``num_pruned`` for
            'fixed', ``mean``/``std`` for 'ebqm-normal'); see
            :func:`mmela.pruning.keep_mask`. ``gamma`` goes to every EBQM
            variant, ``alpha``/``beta`` to 'ebqm' only.
    """

    priority = 'NORMAL'  # before CheckpointHook, so checkpoints hold masks
    ARGUMENTS = ('windows', 'method', 'tau', 'gamma', 'alpha', 'beta', 'eps',
                 'exact_resume')

    def __init__(self,
                 windows: Sequence[Union[int, Sequence[int]]],
                 method: str = 'ebqm',
                 tau: float = 0.2,
                 gamma: float = 0.5,
                 alpha: float = 2.0,
                 beta: float = 5.0,
                 eps: float = 1e-8,
                 exact_resume: bool = True,
                 **method_params):
        self.windows = parse_windows(windows)
        if not (isinstance(eps, float) and 0 < eps < 1):
            raise ValueError(f'eps must be a float in (0, 1), got {eps!r}')
        check_method_arguments(method, method_params, 'ELAPruningHook',
                               self.ARGUMENTS)
        self.method, self.tau, self.eps = method, tau, eps
        self.exact_resume = exact_resume
        params = dict(method_params)
        if method.startswith('ebqm'):
            params.setdefault('gamma', gamma)
        if method == 'ebqm':
            params.update(alpha=alpha, beta=beta)
        self.params = params
        # Fail on bad settings now, not at the end of the first window.
        keep_mask(np.array([0.1, 0.2, 0.3]), method, tau, **params)

        self._window: Optional[Window] = None  # the window in progress
        self._measurement: Optional[WindowMeasurement] = None  # this rank's
        self._recording = False  # in an epoch of the window in progress
        self._warned_skip = False
        # Every rank's sums at the end of the last epoch: what a checkpoint
        # (written at an epoch's end) must hold.
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
    def _backbone(runner) -> LayerAttentionBackbone:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        backbone = getattr(model, 'backbone', None)
        check_backbone(backbone, owner=type(model).__name__)
        return backbone

    def before_run(self, runner) -> None:
        # mmengine 0.10.7 resumes with torch.load's weights-only default of
        # torch >= 2.6, which refuses its own logs in a checkpoint.
        allow_mmengine_checkpoint_types()
        if self.exact_resume and not any(
                isinstance(h, ExactResumeHook) for h in runner.hooks):
            runner.register_hook(ExactResumeHook())
            runner.logger.info(
                'ELAPruningHook: added ExactResumeHook, so that --resume '
                'after a crash ends with the masks of an uninterrupted run '
                '(exact_resume=False turns this off)')

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
                'leave exact_resume=True for exact resumes')

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
    def before_train_epoch(self, runner) -> None:
        window = window_of(self.windows, runner.epoch + 1)
        self._recording = window is not None
        if window is None:
            return
        backbone = self._backbone(runner)
        if self._window is None:  # a new window (or one not restored)
            self._window = window
            masks = [m.tolist() for m in backbone.get_masks()]
            self._measurement = WindowMeasurement(adjacent_pairs(masks),
                                                  self.eps)
            self._warned_skip = False
        backbone.set_attention_recording(True)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not self._recording:
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
        bad = self._measurement.add(dists)
        if bad and not self._warned_skip:
            # Once per window: the table and the JSON count every skip.
            self._warned_skip = True
            s, block = bad[0]
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
        """Stop every rank with one line if training diverged
        (:mod:`.divergence`)."""
        loss = outputs.get('loss') if isinstance(outputs, dict) else None
        how = diverged(loss, runner.model)
        if how is not None:
            raise ELAPruningError(
                f'ELAPruningHook: the training loss diverged: loss {how} at '
                f"{self._where(runner, batch_idx)} and the model's weights "
                f'are no longer finite, so window '
                f'{format_windows([self._window])} cannot be measured; lower '
                f'the learning rate or clip gradients (optim_wrapper=dict('
                f'clip_grad=dict(max_norm=...)))')

    def after_train_epoch(self, runner) -> None:
        if not self._recording:
            return
        self._recording = False
        backbone = self._backbone(runner)
        backbone.set_attention_recording(False)  # not while validating
        if runner.epoch + 1 == self._window[1]:
            self._prune(runner, backbone)
            self._saved_progress = None
        else:
            self._saved_progress = self._gather_progress()

    # ----------------------------------------------------------- pruning
    def _prune(self, runner, backbone: LayerAttentionBackbone) -> None:
        window, measurement = self._window, self._measurement
        totals = torch.from_numpy(measurement.totals())
        all_reduce(totals, op='sum')  # identical masks on every rank
        measurement.load_totals(totals.numpy())
        if measurement.iterations == 0:
            raise RuntimeError(f'ELAPruningHook window {window}: no training '
                               f'iteration was measured')
        names = backbone.res_layers
        unusable = [f'{names[s]} block {b}'
                    for s, _, b in measurement.unusable()]
        if unusable:
            raise ELAPruningError(
                f'ELAPruningHook: window {format_windows([window])} yielded '
                f'no usable measurement of {", ".join(unusable)}: the '
                f'attention distribution was not finite in all '
                f'{measurement.iterations} iterations, so its retrieval '
                f'cannot be decided; check the training log for a non-finite '
                f'loss, or move the window')
        # What ran in the window, before its masks change.
        impl = self._implementation(runner, backbone)
        decision = decide([m.tolist() for m in backbone.get_masks()],
                          measurement.pairs, measurement.mean(), self.method,
                          self.tau, **self.params)
        backbone.set_masks(decision.masks)
        report = window_report(window, self.method, self.tau, self.params,
                               measurement, decision, names, impl)
        self._reports.append(report)
        path = osp.join(runner.work_dir, REPORT_FILE)
        runner.logger.info(f'{format_report(report)}\nwritten to {path}')
        if is_main_process():
            write_reports(path, self._reports)
        self._window, self._measurement = None, None

    # ---------------------------------------------------------- resuming
    def _gather_progress(self) -> dict:
        """Every rank's sums so far (a collective: every rank calls it)."""
        totals = all_gather(torch.from_numpy(self._measurement.totals()))
        return progress_entry(self._window, self._measurement.pairs,
                              [t.numpy() for t in totals])

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
        self._window = self._measurement = None
        progress = state['progress'] if 'progress' in state else \
            legacy_progress(state, window_of(self.windows, epoch))
        warnings = []
        if progress is not None:
            restored = restore_progress(progress, self.windows, epoch,
                                        self.eps, get_world_size(),
                                        get_rank())
            self._window, self._measurement, warnings = restored
            if restored.window is not None:
                self._saved_progress = dict(progress,
                                            window=list(restored.window))
        warnings += resume_warnings(self.windows, self._reports, epoch,
                                    self._window)
        for warning in warnings:
            runner.logger.warning(f'ELAPruningHook: {warning}')
