"""`sarnet fid` as a script: python scripts/fid.py --help."""
from sarnet.cli.fid import main

main(prog="scripts/fid.py")
