"""``python -m controldl`` is the ``controldl`` command."""

import sys

from controldl.cli import main

sys.exit(main())
