"""``python -m zlimit``: the command line of :mod:`zlimit.cli`."""
from .cli import main

raise SystemExit(main())
