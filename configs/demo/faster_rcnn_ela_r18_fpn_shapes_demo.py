# The `make demo` config: Faster R-CNN with an ELA ResNet-18 trained from
# scratch on the synthetic shapes (tools/misc/make_demo_data.py) in minutes
# on a 2-core CPU. It is the COCO config with only what the demo needs
# changed: no pretrained weights offline, 128x128 images with objects of
# 25-77 px, three classes, a CPU-sized number of proposals and RoIs.
_base_ = '../faster_rcnn_ela_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=18,
        frozen_stages=-1,
        norm_eval=False,  # trained from scratch: BN statistics must adapt
        init_cfg=None),
    # 128 FPN channels and a 512-wide box head: a quarter of the FPN and RPN
    # cost and of the box head's, which dominate on 128 px inputs.
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(
        in_channels=128,
        feat_channels=128,
        anchor_generator=dict(scales=[6])),  # 24-96 px at strides 4-16
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=512, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

data_root = 'data/shapes_coco/'
metainfo = dict(classes=('circle', 'square', 'triangle'))
image_scale = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
# Loading 128x128 PNGs is cheap next to the model: no worker processes
# competing with training for the two cores.
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=data_root + 'annotations/instances_val.json', classwise=True)
test_evaluator = val_evaluator

# 8 epochs of 50 iterations (bbox mAP ~0.8; ~0.5 after two). The pruning
# windows keep their place in COCO's schedule: the first epoch, and epoch 7
# of 12 becomes epoch 5 of 8.
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = [
    dict(type='ELAPruningHook', windows=[1, 5], alpha=2.0, beta=5.0, tau=0.2),
    # --resume replays the random augmentation too, so a resumed run ends
    # with the uninterrupted run's masks (mmela/hooks/exact_resume_hook.py).
    dict(type='ExactResumeHook')
]
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[6, 7], gamma=0.1)
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=1))
randomness = dict(seed=0)  # the same demo every time
