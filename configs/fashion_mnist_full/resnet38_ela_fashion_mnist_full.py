# ELA ResNet-38 on the full Fashion-MNIST training set: MRLA-L pruned by
# ELAPruningHook in the paper's CIFAR windows scaled to 6 epochs (see the
# _base_ file), with the paper's CIFAR EBQM setting Beta(5, 1), tau 0.3 and
# our default gamma 0.5.
# None of them is tuned here: the validation split is held out so that any
# tuning (tools/analysis/rethreshold.py shows what another tau would prune)
# can be judged on it, never on the test split.
_base_ = '../_base_/fashion_mnist_full.py'

model = dict(backbone=dict(layer_attention='light'))
custom_hooks = [
    dict(type='ELAPruningHook', windows={{_base_.ela_windows}},
         alpha=5.0, beta=1.0, tau=0.3),
    # --resume replays the random augmentation too, so a resumed run ends
    # with the uninterrupted run's masks (mmela/hooks/exact_resume_hook.py).
    dict(type='ExactResumeHook'),
    dict(type='SplitSizeHook')
]
