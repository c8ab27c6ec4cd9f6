"""Per-operation costs from a pytest-benchmark JSON file, as a Markdown table.

A batched benchmark (``extra_info["batch"]``: the loop count of one timed
call) costs its median divided by the batch per operation. Also writes a
small JSON (``--out``) without the raw timings.

Usage:
  python -m pytest bench/test_bench_bus.py --benchmark-only --benchmark-json=/tmp/ops.json
  python bench/ops_table.py /tmp/ops.json --out bench/results/bus-ops.json \
      --md bench/results/bus-ops.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import markdown_table

__all__ = ["main", "per_operation"]


def per_operation(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per benchmark: group, name, batch, rounds, median and IQR per operation (ns)."""
    rows = []
    for b in data["benchmarks"]:
        batch = int(b.get("extra_info", {}).get("batch", 1))
        stats = b["stats"]
        rows.append(
            {
                "group": b["group"],
                "name": b["name"],
                "batch": batch,
                "rounds": stats["rounds"],
                "median_ns": stats["median"] * 1e9 / batch,
                "iqr_ns": stats["iqr"] * 1e9 / batch,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print (and optionally write) the per-operation table of a benchmark JSON file."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("json", help="pytest-benchmark --benchmark-json output")
    p.add_argument("--out", help="write the per-operation rows and machine info here (JSON)")
    p.add_argument("--md", help="write the Markdown table here")
    args = p.parse_args(argv)
    data = json.loads(Path(args.json).read_text())
    rows = per_operation(data)
    mi = data.get("machine_info", {})
    md = (
        f"pytest-benchmark {data.get('version', '?')}, {data.get('datetime', '?')}; "
        f"{mi.get('python_implementation', '?')} {mi.get('python_version', '?')} "
        f"({mi.get('python_compiler', '?')}); per operation = median of a round / batch.\n\n"
    )
    md += markdown_table(
        ["group", "benchmark", "batch", "rounds", "median ns/op", "IQR ns/op"],
        [
            [r["group"], r["name"], r["batch"], r["rounds"], r["median_ns"], r["iqr_ns"]]
            for r in rows
        ],
    )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "datetime": data.get("datetime"),
                    "machine_info": mi,
                    "commit_info": data.get("commit_info"),
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )
    if args.md:
        Path(args.md).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
