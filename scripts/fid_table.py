"""`sarnet table` as a script: python scripts/fid_table.py --help."""
from sarnet.table import main

main(prog="scripts/fid_table.py")
