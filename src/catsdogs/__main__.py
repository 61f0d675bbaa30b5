"""`python -m catsdogs`: the `catsdogs` command."""

import sys

from catsdogs.cli import main

sys.exit(main())
