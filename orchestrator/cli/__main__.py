"""`python -m orchestrator.cli` is `rlan`."""

import sys

from orchestrator.cli import main

sys.exit(main())
