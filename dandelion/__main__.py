"""``python -m dandelion``: the command line."""

import sys

from dandelion.cli import main

sys.exit(main())
