# Plain ResNet-38 on the full Fashion-MNIST training set, no layer
# attention: the baseline of tools/experiments/fashion_mnist_full.sh.
_base_ = '../_base_/fashion_mnist_full.py'

model = dict(backbone=dict(layer_attention=None))
