# ELA ResNet-56 on CIFAR-10 (paper Table 1: 94.89 top-1). KL averaged over
# epochs 1-3, 45-48 and 91-93; EBQM with Beta(5, 1), tau 0.3.
_base_ = '../_base_/cifar10_ela_resnet.py'

model = dict(backbone=dict(depth=56, layer_attention='light'))
custom_hooks = [
    dict(type='ELAPruningHook', windows=[(1, 3), (45, 48), (91, 93)],
         alpha=5.0, beta=1.0, tau=0.3),
    # --resume replays the random augmentation too, so a resumed run ends
    # with the uninterrupted run's masks (mmela/hooks/exact_resume_hook.py).
    dict(type='ExactResumeHook')
]
