# MRLA-L ResNet-56 on CIFAR-100 (paper Table 1: 74.13 top-1).
_base_ = '../_base_/cifar100_ela_resnet.py'

model = dict(backbone=dict(depth=56, layer_attention='light'))
