"""The command-line layer of ``tools/``: one module per job.

- :mod:`.args`: the flags of ``tools/train.py`` and ``tools/test.py``;
- :mod:`.config`: reading a config (syntax errors with file and line);
- :mod:`.options`: applying the flags to the config;
- :mod:`.preflight`: checking the config before anything is written;
- :mod:`.checkpoints`: whether a checkpoint is complete and fits the model;
- :mod:`.runner`: building and tearing down the Runner;
- :mod:`.errors`: how a user's mistake becomes one ``error:`` line.

One implementation serves detection and classification configs: the
config's ``default_scope`` (``'mmdet'`` or ``'mmpretrain'``, set by the stock
``_base_`` runtime every mmela config inherits) picks what differs between
mmdet's and mmpretrain's own tools.
"""
from .args import parse_test_args, parse_train_args, test_parser, train_parser
from .checkpoints import check_fits, layer_attention_keys, read_state_dict
from .config import SCOPES, load_config
from .errors import ConfigError, ConfigErrors, print_errors, user_errors
from .options import apply_test_args, apply_train_args, use_available_devices
from .preflight import preflight
from .runner import (LogRetrievals, add_prediction_dump, build_runner,
                     prepare_stack, release_distributed)

__all__ = [
    'parse_train_args', 'parse_test_args', 'train_parser', 'test_parser',
    'load_config', 'SCOPES', 'apply_train_args', 'apply_test_args',
    'use_available_devices', 'preflight', 'check_fits',
    'layer_attention_keys', 'read_state_dict', 'ConfigError', 'ConfigErrors',
    'print_errors', 'user_errors', 'build_runner', 'prepare_stack',
    'release_distributed', 'LogRetrievals', 'add_prediction_dump'
]
