# CIFAR-100 (mmpretrain's dataset config) at batch 128.
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py', './cifar_ela_resnet.py'
]

model = dict(head=dict(num_classes=100))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = dict(batch_size=128)
