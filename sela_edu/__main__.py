"""``python -m sela_edu`` is the ``sela-edu`` command (see :mod:`sela_edu.cli`)."""

import sys

from sela_edu.cli import main

sys.exit(main())
