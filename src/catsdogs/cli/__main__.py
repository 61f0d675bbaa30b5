"""`python -m catsdogs.cli`: the `catsdogs` command."""

import sys

from catsdogs.cli import main

sys.exit(main())
