from sarnet.metrics.fid import (
    Classifier,
    ClassifierCacheError,
    FIDEvaluator,
    fid_between,
    load_classifier,
    train_classifier,
)

__all__ = ["Classifier", "ClassifierCacheError", "FIDEvaluator", "fid_between", "load_classifier",
           "train_classifier"]
