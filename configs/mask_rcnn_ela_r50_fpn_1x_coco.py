# ELA: the stock Mask R-CNN R50 FPN 1x with a layer-attention
# backbone (MRLA-L) whose redundant retrievals ELAPruningHook prunes. Paper,
# COCO 1x: KL measured during epoch 1 and epoch 7 (1-based), EBQM with
# Beta(2, 5), tau 0.2.
# The stock init_cfg (torchvision://resnet50) stays: the ResNet weights load,
# layer attention starts fresh (docs/pretrained.md).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmela'], allow_failed_imports=False)

model = dict(backbone=dict(type='ELAResNet', layer_attention='light'))
custom_hooks = [
    dict(type='ELAPruningHook', windows=[1, 7], alpha=2.0, beta=5.0, tau=0.2),
    # --resume replays the random augmentation too, so a resumed run ends
    # with the uninterrupted run's masks (mmela/hooks/exact_resume_hook.py).
    dict(type='ExactResumeHook')
]
