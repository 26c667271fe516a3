"""`sarnet sample` as a script: python scripts/sample.py --help."""
from sarnet.cli.sample import main

main(prog="scripts/sample.py")
