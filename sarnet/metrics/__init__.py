from sarnet.metrics.fid import (
    ClassifierCacheError,
    FIDEvaluator,
    LeNet,
    fid_between,
    load_classifier,
    train_classifier,
)

__all__ = ["ClassifierCacheError", "FIDEvaluator", "LeNet", "fid_between", "load_classifier", "train_classifier"]
