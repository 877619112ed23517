"""``python -m outcrop <stage>``: the rules start stages this way, so that a job needs no console
script installed, only the package on its PYTHONPATH (which the workflow sets for every job)."""

import sys

from outcrop.cli import main

sys.exit(main())
