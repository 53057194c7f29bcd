# Plain ResNet-56 on CIFAR-10, no layer attention
# (paper Table 1: 93.01 top-1).
_base_ = '../_base_/cifar10_ela_resnet.py'

model = dict(backbone=dict(depth=56, layer_attention=None))
