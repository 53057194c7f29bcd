# Plain ResNet-56 on CIFAR-100, no layer attention
# (paper Table 1: 72.36 top-1).
_base_ = '../_base_/cifar100_ela_resnet.py'

model = dict(backbone=dict(depth=56, layer_attention=None))
