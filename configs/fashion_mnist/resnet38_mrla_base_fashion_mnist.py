# MRLA-B ResNet-38 on Fashion-MNIST: the reference of the paper's
# training-time comparison (Fig. 4).
_base_ = '../_base_/fashion_mnist_ela_resnet.py'

model = dict(backbone=dict(layer_attention='base'))
# lr 0.025, chosen on the validation split (docs/results/fashion_mnist_tune.md:
# 77.79 against 65.51 at the other methods' 0.05).
optim_wrapper = dict(optimizer=dict(lr=0.025))
