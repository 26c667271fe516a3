"""`sarnet likelihood` as a script: python scripts/likelihood.py --help."""
from sarnet.cli.likelihood import main

main(prog="scripts/likelihood.py")
