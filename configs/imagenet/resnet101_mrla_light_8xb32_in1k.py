# MRLA-L baseline: the ELA config without pruning (every retrieval stays on).
_base_ = './resnet101_ela_8xb32_in1k.py'

custom_hooks = []
