"""Shared fixtures and marker handling for the mxrc test suite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervised_helpers import listener, supervised  # noqa: F401 (fixtures for all modules)

DATA_DIR = Path(__file__).parent / "data"
PROJECT_ROOT = Path(__file__).parent.parent


def _is_privileged() -> bool:
    return os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _is_privileged():
        return
    skip = pytest.mark.skip(reason="needs root (CAP_SYS_NICE, CAP_IPC_LOCK); run as root")
    for item in items:
        if "privileged" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def data_dir() -> Path:
    """The directory of fake /proc and /sys trees and config fixtures."""
    return DATA_DIR


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def instance(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique instance name for this test; its segment is removed afterwards."""
    from mxrc.bus import Segment

    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"test-{module}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    Segment.remove(name, force=True)
