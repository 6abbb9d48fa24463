"""Test-wide settings: graph verification after every pass is always on in tests."""
from __future__ import annotations

from typing import Iterator

import pytest

from quantgraph import config


@pytest.fixture(autouse=True, scope="session")
def _verify_graphs() -> Iterator[None]:
    with config.override(verify=True):
        yield
