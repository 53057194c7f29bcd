# MRLA-B ResNet-20 on CIFAR-10 (the reference of the paper's training-time
# comparison, Fig. 4).
_base_ = '../_base_/cifar10_ela_resnet.py'

model = dict(backbone=dict(depth=20, layer_attention='base'))
