"""`sarnet interpolate` as a script: python scripts/interpolate.py --help."""
from sarnet.cli.interpolate import main

main(prog="scripts/interpolate.py")
