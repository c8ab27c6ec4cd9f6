"""Helpers for testing applications built on mxrc.

- Assertions on cycle statistics for jitter tests (``assert_late_share``,
  ``assert_percentile``, ``assert_miss_rate``, ``assert_jitter``), with failure
  messages that name the measured value, the bound and the run (docs/jitter-tests.md).
- :class:`SupervisedProcess`: ``mxrc supervise`` in a child process for integration
  tests of an application under supervision (docs/supervisor.md).
"""

from mxrc.testing._stats import (
    Metric,
    assert_jitter,
    assert_late_share,
    assert_miss_rate,
    assert_percentile,
)
from mxrc.testing._supervised import SupervisedProcess

__all__ = [
    "Metric",
    "SupervisedProcess",
    "assert_jitter",
    "assert_late_share",
    "assert_miss_rate",
    "assert_percentile",
]
