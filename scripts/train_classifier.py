"""`sarnet train-classifier` as a script: python scripts/train_classifier.py --help."""
from sarnet.cli.train_classifier import main

main(prog="scripts/train_classifier.py")
