"""mxrc._core: the compiled core (private; use the mxrc package)."""

from . import _bench as _bench
from . import bus as bus
from . import clock as clock
from . import cycle as cycle
from . import datastore as datastore
from . import demo as demo
from . import numa as numa
from . import sched as sched

__version__: str
