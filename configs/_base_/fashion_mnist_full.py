# Fashion-MNIST on the full training set, for a GPU
# (tools/experiments/fashion_mnist_full.sh): the ResNet-38 setting of
# fashion_mnist_ela_resnet.py, trained on all 50,000 training images that
# are not the validation split (the last 10,000), with the paper's CIFAR
# recipe (batch 128, SGD lr 0.1, momentum 0.9, wd 1e-4, lr x0.1 at 1/2 and
# 5/6 of the epochs).
#
# Six epochs (2,346 iterations): what twelve such runs at once fit in about
# 8 minutes of one H200 (the estimate is in fashion_mnist_full.sh); a
# plain network reaches 90% and more on Fashion-MNIST's validation images
# in a few epochs at this size.
_base_ = ['./fashion_mnist_ela_resnet.py']

max_epochs = 6
# The paper's CIFAR windows (epochs 1-3, 45-48 and 91-93 of 180: the start,
# a quarter of the way, the first epoch after the lr step at one half) on
# six epochs with the lr step after epoch 3.
ela_windows = [(1, 1), (2, 2), (4, 4)]

train_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(indices=50000))
optim_wrapper = dict(optimizer=dict(lr=0.1))
param_scheduler = dict(
    _delete_=True, type='MultiStepLR', by_epoch=True, milestones=[3, 5],
    gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
