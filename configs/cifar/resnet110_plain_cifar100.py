# Plain ResNet-110 on CIFAR-100, no layer attention
# (paper Table 1: 73.04 top-1).
_base_ = '../_base_/cifar100_ela_resnet.py'

model = dict(backbone=dict(depth=110, layer_attention=None))
