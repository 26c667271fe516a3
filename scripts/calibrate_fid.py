"""`sarnet calibrate` as a script: python scripts/calibrate_fid.py --help."""
from sarnet.cli.calibrate import main

main(prog="scripts/calibrate_fid.py")
