"""``python -m quantgraph ...`` runs the ``quantgraph`` command (see :mod:`quantgraph.cli`)."""
from __future__ import annotations

import sys

from quantgraph.cli import main

if __name__ == "__main__":
    sys.exit(main())
