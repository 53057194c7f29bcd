# ELA ResNet-101 (mmpretrain's resnet101_8xb32_in1k.py differs from the R50
# config in the depth only).
_base_ = './resnet50_ela_8xb32_in1k.py'

model = dict(backbone=dict(depth=101))
