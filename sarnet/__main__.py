"""python -m sarnet <command>: the same as the `sarnet` command."""
import sys

from sarnet.cli import main

sys.exit(main())
