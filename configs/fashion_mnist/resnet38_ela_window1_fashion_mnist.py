# The Table 4 ablation of tools/experiments/fashion_mnist.sh: ELA ResNet-38
# trained through the first window only (epoch 1; the lr schedule of the
# full run is unchanged up to there), for the seeds beyond those of the full
# ELA runs. The window's divergences in ela_pruning.json are then
# re-thresholded offline with EBQM, a raw threshold and a fixed count.
_base_ = './resnet38_ela_fashion_mnist.py'

custom_hooks = [
    dict(type='ELAPruningHook', windows=[(1, 1)], alpha=5.0, beta=1.0,
         tau=0.3),
    # --resume replays the random augmentation too, so a resumed run ends
    # with the uninterrupted run's masks (mmela/hooks/exact_resume_hook.py).
    dict(type='ExactResumeHook'),
    dict(type='SplitSizeHook')
]
# No validation: only the divergences are needed. mmengine validates after
# the last epoch whatever val_interval says, unless it is before val_begin.
train_cfg = dict(max_epochs=1, val_begin=2)
