"""``python -m controldl.cli``: the same as the ``controldl`` command."""

from controldl.cli import main

raise SystemExit(main())
