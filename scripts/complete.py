"""`sarnet complete` as a script: python scripts/complete.py --help."""
from sarnet.cli.complete import main

main(prog="scripts/complete.py")
