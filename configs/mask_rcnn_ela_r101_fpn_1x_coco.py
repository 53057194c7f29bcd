# ELA Mask R-CNN with ResNet-101, derived from the R50 config as mmdet's
# mask-rcnn_r101_fpn_1x_coco.py is.
_base_ = './mask_rcnn_ela_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
