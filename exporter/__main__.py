"""Entry point for ``python -m exporter``."""

import sys

from .cli import main

sys.exit(main())
