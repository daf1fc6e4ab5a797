"""``python -m photocomp``: the command line (same as the ``photocomp`` command)."""

import sys

from photocomp.cli import main

if __name__ == "__main__":
    sys.exit(main())
