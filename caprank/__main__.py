"""`python -m caprank` is the same as the `caprank` command."""

import sys

from caprank.cli import main

sys.exit(main())
