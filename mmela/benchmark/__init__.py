"""Training-step benchmark of plain ResNet, MRLA-B, MRLA-L and ELA: the
workloads (:mod:`.workloads`), the measurement (:mod:`.measure`) and the
report (:mod:`.report`); ``tools/analysis/benchmark_speed.py`` is its
command line (:mod:`mmela.cli.benchmark_speed`)."""
