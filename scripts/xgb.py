"""`sarnet xgb` as a script: python scripts/xgb.py --help."""
from sarnet.cli.xgb import main

main(prog="scripts/xgb.py")
