# MRLA-B ResNet-38 on Fashion-MNIST: the reference of the paper's
# training-time comparison (Fig. 4).
_base_ = '../_base_/fashion_mnist_ela_resnet.py'

model = dict(backbone=dict(layer_attention='base'))
