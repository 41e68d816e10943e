"""Statistics for model zoos: correlations with bootstrap CIs, label-free estimation/selection."""

from invlab.stats.correlation import STATISTICS, correlate, probit, rankdata, statistics
from invlab.stats.estimation import fit_line, leave_one_shift_out, selection_regret

__all__ = ["STATISTICS", "correlate", "fit_line", "leave_one_shift_out", "probit", "rankdata",
           "selection_regret", "statistics"]
