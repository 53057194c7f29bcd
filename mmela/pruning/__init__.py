"""ELA's pruning, without OpenMMLab: the maths (:mod:`.functional`: KL
redundancy, Eq. 11, and EBQM, Algorithm 1), measurement windows, the
decision rule, the running sums of a window, the report and its offline
replay. ``ELAPruningHook`` is the mmengine glue around these."""
from .decision import (Decision, Masks, Pair, adjacent_pairs,
                       check_method_arguments, decide, method_parameters)
from .functional import (EBQM_MAPPINGS, PRUNING_METHODS, QUANTILE_MAPPINGS,
                         ebqm, keep_mask, mapped_divergences, padded_kl)
from .measurement import WindowMeasurement
from .replay import initial_masks, recorded_setting, replay, reproduces
from .report import (REPORT_FILE, ReportError, format_params, format_report,
                     load_reports, stage_index, stage_name, window_report,
                     write_reports)
from .windows import Window, format_windows, parse_windows, window_of

__all__ = [
    'PRUNING_METHODS', 'EBQM_MAPPINGS', 'QUANTILE_MAPPINGS', 'ebqm',
    'keep_mask', 'mapped_divergences', 'padded_kl', 'Pair', 'Masks',
    'Decision', 'adjacent_pairs', 'decide', 'method_parameters',
    'check_method_arguments',
    'WindowMeasurement', 'Window', 'parse_windows', 'format_windows',
    'window_of', 'REPORT_FILE', 'ReportError', 'window_report',
    'format_report', 'format_params', 'write_reports', 'load_reports', 'stage_index',
    'stage_name', 'initial_masks', 'replay', 'recorded_setting', 'reproduces'
]
