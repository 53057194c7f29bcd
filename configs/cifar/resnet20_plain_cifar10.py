# Plain ResNet-20 on CIFAR-10, no layer attention
# (paper Table 1: 91.35 top-1).
_base_ = '../_base_/cifar10_ela_resnet.py'

model = dict(backbone=dict(depth=20, layer_attention=None))
