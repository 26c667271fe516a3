"""`sarnet gpu-check` as a script: python scripts/gpu_check.py --help."""
from sarnet.cli.gpu_check import main

main(prog="scripts/gpu_check.py")
