# MRLA-L ResNet-110 on CIFAR-10 (paper Table 1: 94.14 top-1).
_base_ = '../_base_/cifar10_ela_resnet.py'

model = dict(backbone=dict(depth=110, layer_attention='light'))
