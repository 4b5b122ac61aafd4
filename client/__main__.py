"""``python -m client ...``: see :mod:`client.cli`."""

import sys

from .cli import main

sys.exit(main())
