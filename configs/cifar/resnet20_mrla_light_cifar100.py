# MRLA-L ResNet-20 on CIFAR-100 (paper Table 1: 70.84 top-1).
_base_ = '../_base_/cifar100_ela_resnet.py'

model = dict(backbone=dict(depth=20, layer_attention='light'))
