# Plain ResNet-20 on CIFAR-100, no layer attention
# (paper Table 1: 67.95 top-1).
_base_ = '../_base_/cifar100_ela_resnet.py'

model = dict(backbone=dict(depth=20, layer_attention=None))
