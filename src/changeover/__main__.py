"""``python -m changeover``: the same as the ``changeover`` command."""

import sys

from changeover.cli import main

sys.exit(main())
