# MRLA-L ResNet-20 on CIFAR-10 (paper Table 1: 92.21 top-1).
_base_ = '../_base_/cifar10_ela_resnet.py'

model = dict(backbone=dict(depth=20, layer_attention='light'))
