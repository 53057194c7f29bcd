# ELA: the stock mmpretrain ResNet-50 (8 GPUs x 32, 100 epochs) with a
# layer-attention backbone (MRLA-L) whose redundant retrievals
# ELAPruningHook prunes. Paper, ImageNet-1K: KL averaged over epochs 1-3 and
# 51-53, EBQM with Beta(2, 5), tau 0.25.
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['mmela'], allow_failed_imports=False)

model = dict(backbone=dict(type='ELAResNet', layer_attention='light'))
custom_hooks = [
    dict(type='ELAPruningHook', windows=[(1, 3), (51, 53)], alpha=2.0,
         beta=5.0, tau=0.25),
    # --resume replays the random augmentation too, so a resumed run ends
    # with the uninterrupted run's masks (mmela/hooks/exact_resume_hook.py).
    dict(type='ExactResumeHook')
]
