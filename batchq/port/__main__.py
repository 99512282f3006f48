"""``python -m batchq.port``: see :mod:`batchq.port`."""

import sys

from . import main

sys.exit(main())
