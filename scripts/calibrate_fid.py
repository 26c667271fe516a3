"""`sarnet calibrate` as a script: python scripts/calibrate.py --help."""
from sarnet.cli.calibrate import main

main(prog="scripts/calibrate.py")
