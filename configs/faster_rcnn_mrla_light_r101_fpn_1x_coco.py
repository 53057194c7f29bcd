# MRLA-L baseline: the ELA config without pruning (every retrieval stays on).
_base_ = './faster_rcnn_ela_r101_fpn_1x_coco.py'

custom_hooks = []
