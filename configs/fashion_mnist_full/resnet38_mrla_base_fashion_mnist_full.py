# MRLA-B ResNet-38 on the full Fashion-MNIST training set: the reference of
# the paper's training-time comparison (Fig. 4).
_base_ = '../_base_/fashion_mnist_full.py'

model = dict(backbone=dict(layer_attention='base'))
