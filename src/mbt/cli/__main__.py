"""`python -m mbt.cli` (what torchrun runs: `torchrun ... -m mbt.cli train ...`)."""

import sys

from . import main

sys.exit(main())
