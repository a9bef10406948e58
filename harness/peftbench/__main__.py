"""``python -m peftbench``: the same as the ``peftbench`` command."""

import sys

from peftbench.cli import main

sys.exit(main())
