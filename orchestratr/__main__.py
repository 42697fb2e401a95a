"""Allow `python -m orchestratr`."""

import sys

from orchestratr.cli import main

sys.exit(main())
