"""Test-wide settings: graph verification after every pass and strict rewriting (a rule that raises is a
PassError, not a skipped rewrite) are always on in tests."""
from __future__ import annotations

from typing import Iterator

import pytest

from quantgraph import config


@pytest.fixture(autouse=True, scope="session")
def _strict_checks() -> Iterator[None]:
    with config.override(verify=True, strict=True):
        yield
