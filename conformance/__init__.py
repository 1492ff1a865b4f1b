"""The conformance suite: proves a backend (on a device) computes what the NumPy float64 reference
computes, forward and gradients, for every compression x mode, layers and whole fields.

CLI: ``resfields conformance [--backend torch|tinygrad|all] [--device cpu|cuda]``; pytest collects
the same cases from ``tests/test_conformance.py``.
"""

from .cases import Case, grid, make_inputs, random_case, strategy_cases
from .compare import TOLERANCES, Result, compare_outputs, normalised_error, run_case, tolerance
from .suite import format_table, run_suite, suite_cases, tolerance_note

__all__ = [
    "TOLERANCES",
    "Case",
    "Result",
    "compare_outputs",
    "format_table",
    "grid",
    "make_inputs",
    "normalised_error",
    "random_case",
    "run_case",
    "run_suite",
    "strategy_cases",
    "suite_cases",
    "tolerance",
    "tolerance_note",
]
