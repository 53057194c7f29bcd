# MRLA-L ResNet-38 on the full Fashion-MNIST training set: ELA without
# pruning.
_base_ = '../_base_/fashion_mnist_full.py'

model = dict(backbone=dict(layer_attention='light'))
