"""mxrc._core: the compiled core (private; use the mxrc package)."""

from . import clock as clock
from . import numa as numa
from . import sched as sched

__version__: str
