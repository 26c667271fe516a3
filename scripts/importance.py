"""`sarnet importance` as a script: python scripts/importance.py --help."""
from sarnet.cli.importance import main

main(prog="scripts/importance.py")
