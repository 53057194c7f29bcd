# Plain ResNet-38 on Fashion-MNIST, no layer attention: the accuracy and
# speed baseline of tools/experiments/fashion_mnist.sh.
_base_ = '../_base_/fashion_mnist_ela_resnet.py'

model = dict(backbone=dict(layer_attention=None))
