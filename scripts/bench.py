"""`sarnet bench` as a script: python scripts/bench.py --help."""
from sarnet.cli.bench import main

main(prog="scripts/bench.py")
