"""`python -m refserver COMMAND`: see `refserver.cli`."""

from __future__ import annotations

import sys

from refserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
