"""Small helpers shared by mmela's tools and tests (torch only)."""
from .op_count import KernelOpCounter, count_kernel_ops

__all__ = ['KernelOpCounter', 'count_kernel_ops']
