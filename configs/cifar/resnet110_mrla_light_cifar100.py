# MRLA-L ResNet-110 on CIFAR-100 (paper Table 1: 75.02 top-1).
_base_ = '../_base_/cifar100_ela_resnet.py'

model = dict(backbone=dict(depth=110, layer_attention='light'))
