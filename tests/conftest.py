"""Settings for the whole test session.

One intra-op thread per process. The suite starts many processes at once
(the tools in subprocesses, two-rank distributed runs), and on a small
machine torch's default of one thread per core then oversubscribes the cores:
a ResNet-50 forward pass at 64x64 took 8 s instead of 0.2 s here. The
environment variable reaches the subprocesses too.
"""
import os
import sys

os.environ.setdefault('OMP_NUM_THREADS', '1')
# The helpers every test folder shares (tool_cases, toy_runner, ...).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402

from mmela.models import set_layer_attention_impl  # noqa: E402


@pytest.fixture(params=['fused', 'reference'])
def la_impl(request):
    """Run the test once with each implementation of layer attention."""
    previous = set_layer_attention_impl(request.param)
    yield request.param
    set_layer_attention_impl(previous)
