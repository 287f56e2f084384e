"""``python -m reml_engine``: the command line of :mod:`reml_engine.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
