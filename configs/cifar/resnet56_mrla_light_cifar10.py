# MRLA-L ResNet-56 on CIFAR-10 (paper Table 1: 93.88 top-1).
_base_ = '../_base_/cifar10_ela_resnet.py'

model = dict(backbone=dict(depth=56, layer_attention='light'))
