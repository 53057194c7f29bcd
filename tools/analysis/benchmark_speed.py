"""Training-step time and memory of plain ResNet, MRLA-B, MRLA-L and ELA.

One run times a full training step (forward, backward, optimizer step) of
every method on the same inputs, interleaved round-robin step by step
(ResNet, MRLA-B, MRLA-L, ELA, ResNet, ...; the order rotates every round) so
that background load hits all methods alike. It reports the median step time
and its interquartile range (IQR), and the ratios against plain ResNet and
MRLA-B: each ratio is the median, over rounds, of the two methods' times in
the same round. Ratios are what we compare with the paper (Fig. 4: ELA about
30-35% faster than MRLA-B, MRLA-L 10-15%); absolute times only compare runs
on one machine.

Methods (rows of the table):

- ``ResNet``: the plain backbone (``layer_attention=None``).
- ``MRLA-B`` and ``MRLA-L``: every retrieval on. MRLA-L is also ELA with
  every retrieval kept, the upper end of ELA's cost.
- ``ELA (hook masks, k/n kept)``: MRLA-L with the masks of a real
  :class:`ELAPruningHook` run: by default a short one (one epoch window of a
  few iterations, on synthetic images, with the suite's alpha, beta, tau from
  the paper) on a classifier around the suite's backbone, or the last report
  of ``--masks ela_pruning.json``.
- ``ELA (all pruned, 0/n kept)``: every retrieval pruned, the lower end of
  ELA's cost, which should be that of the plain ResNet.

Suites:

- ``cifar``: the bottleneck CIFAR ResNets (``--depths``, default 20 56 110),
  batch 128 at 32x32, a 100-class linear head.
- ``r50-224``: the ImageNet ResNet-50, batch 32 at 224x224, 1000 classes.
- ``r50-800``: the same backbone as in COCO training (all four stages out,
  ``frozen_stages=1``, ``norm_eval=True`` as in mmdet's 1x configs), batch 2
  at 800x1333; the loss is the sum of the outputs' means.
- ``faster-rcnn``: mmdet's Faster R-CNN R50 FPN 1x with the backbone swapped
  for ``ELAResNet``, batch 2 at 800x1333 with random boxes. Meant for a GPU:
  ``--suite all`` skips it on the CPU; ``--suite faster-rcnn`` runs it there
  anyway (pass small ``--image-size`` and ``--batch-size``).

A config instead of a suite (``--config CONFIG``, with ``--cfg-options
KEY=VALUE ...`` merged in as ``tools/train.py`` does): the backbone of the
config's model (an ELA backbone, e.g. ``ELAResNet``, ``ELAResNet_CIFAR``,
``ELAResNetCIFAR``), with a linear head and cross-entropy when the model has
a classification head, else the sum of its outputs' means, on random images
of the config's input shape (the backbone's ``in_channels``, and the size
its test pipeline gives, e.g. 1x28x28 for Fashion-MNIST) at the batch size
of its ``train_dataloader``, unless ``--image-size`` and ``--batch-size``
say otherwise. ELA's short hook run takes the settings of the config's
``ELAPruningHook``. ``--masks`` must come from a run of the same network:
masks with other blocks per stage are refused with one ``error:`` line.

Kernel launches: ``ops / step`` is the number of kernel-launching aten
operators of one training step (forward, backward, SGD step with momentum and
``foreach=True``, as on CUDA), counted on the eager model with a
``TorchDispatchMode`` (:mod:`mmela.utils.op_count`: views and metadata
queries excluded) on the first two samples of the batch (the count does not
depend on the batch size) after one uncounted step. It does not depend on
the machine's load, but it does on the device's kernels: a plain ResNet-110
step is 977 operators on the CPU and 865 on CUDA (cuDNN's batch norm is one
operator forward and one backward), so compare counts from one device.
How much a step's time follows the count depends on the GPU and the batch:
on an H200 at batch 128 in float32 the GPU waited for the host about half of
each eager step (``docs/benchmarks/README.md``).

Memory: ``peak step memory`` is ``torch.cuda.max_memory_allocated`` during a
step minus what was allocated before it (activations, gradients, workspace),
the largest over the measured steps; on the CPU it is n/a. ``saved
activations`` is what autograd keeps for the backward pass in one forward pass
(unique storages seen by ``saved_tensors_hooks``, parameters excluded),
counted in eager mode on any device, in the second forward pass (MRLA-B
sizes its stage buffers from the previous pass; the first one grows them).

``--hook-cost`` trains the suite's ELA classifier (deepest CIFAR depth) for
``2 * --hook-cost-epochs + 1`` short epochs with the hook measuring in every
other one (tau = 0, so it prunes nothing and every epoch computes the same)
and compares the time per iteration inside and outside the windows; the first
epoch is a warm-up.

Writes ``benchmark_<suite>.md``, ``.json`` and ``.png`` (step time against
depth per method, the layout of the paper's Fig. 4; ``benchmark_<config
name>.*`` for a config) to ``--out-dir``.

Examples::

    # GPU, the paper's settings
    python tools/analysis/benchmark_speed.py --suite all --device cuda \\
        --amp fp16 --out-dir work_dirs/benchmark
    # CPU, small
    python tools/analysis/benchmark_speed.py --suite cifar --batch-size 32 \\
        --steps 5 --warmup 2 --out-dir docs/benchmarks/cpu
    # CPU, a config's model, with the masks of its run
    python tools/analysis/benchmark_speed.py \\
        --config configs/fashion_mnist/resnet38_ela_fashion_mnist.py \\
        --masks work_dirs/resnet38_ela_fashion_mnist/ela_pruning.json
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.benchmark_speed import main  # noqa: E402

if __name__ == '__main__':
    main()
