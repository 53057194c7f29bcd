# MRLA-L ResNet-38 on Fashion-MNIST: ELA without pruning.
_base_ = '../_base_/fashion_mnist_ela_resnet.py'

model = dict(backbone=dict(layer_attention='light'))
