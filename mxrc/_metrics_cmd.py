"""``mxrc metrics``: an instance's Prometheus metrics, read from another process.

Attaches to the instance's segment like ``mxrc status`` and either prints the
exposition once (for a look, or ``| promtool check metrics``) or serves it on
``http://ADDR:PORT/metrics`` until Ctrl-C. Serving from this separate process
keeps scrapes out of the RT process (a scrape holds the GIL for milliseconds;
docs/tiers.md).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from mxrc._status import EXIT_OK, EXIT_USAGE, attach_instance, default_instance

if TYPE_CHECKING:
    from mxrc.metrics import Units

__all__ = ["MetricsOptions", "run_metrics"]


@dataclass(frozen=True)
class MetricsOptions:
    instance: str | None = None
    port: int | None = None  # None: print once
    addr: str = "127.0.0.1"
    units: Units = "us"
    process: str = "rt"


def run_metrics(opts: MetricsOptions, out: TextIO, err: TextIO) -> int:
    """Run ``mxrc metrics``; return the exit code (those of ``mxrc status``)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from mxrc.metrics import RtCollector, start_http_server

    instance = opts.instance
    if instance is None:
        found, code = default_instance(err, "metrics")
        if found is None:
            return code
        if isinstance(found, list):
            print(
                f"mxrc metrics: several instances are running ({', '.join(found)}); "
                "pick one with --instance NAME",
                file=err,
            )
            return EXIT_USAGE
        instance = found
    segment, code = attach_instance(instance, err, "metrics")
    if segment is None:
        return code
    with segment:
        collector = RtCollector(segment, process=opts.process, units=opts.units)
        if opts.port is None:
            registry = CollectorRegistry(auto_describe=True)
            registry.register(collector)
            out.write(generate_latest(registry).decode())
            return EXIT_OK
        try:
            server = start_http_server(port=opts.port, addr=opts.addr, collector=collector)
        except OSError as exc:
            print(f"mxrc metrics: cannot listen on {opts.addr}:{opts.port}: {exc}", file=err)
            return EXIT_USAGE
        with server:
            print(f"mxrc metrics: instance {instance!r} on {server.url} (Ctrl-C stops)", file=out)
            out.flush()
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return EXIT_OK
