# What the paper's CIFAR configs share: the bottleneck CIFAR ResNet
# (ELAResNetCIFAR, 256 output channels) in an ImageClassifier, trained with
# the standard CIFAR ResNet recipe that MRLA and ELA follow: batch 128 on one
# GPU, SGD lr 0.1, momentum 0.9, weight decay 1e-4 (mmpretrain's
# cifar10_bs128 schedule), 180 epochs, lr x0.1 at epochs 90 and 135.
# cifar10_ela_resnet.py / cifar100_ela_resnet.py add the data; each config
# in configs/cifar/ then sets the depth and the layer attention.
_base_ = [
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmela'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ELAResNetCIFAR'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

param_scheduler = dict(milestones=[90, 135])
train_cfg = dict(max_epochs=180)
