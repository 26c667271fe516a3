from sarnet.metrics.fid import (
    ClassifierCacheError,
    FIDEvaluator,
    LeNet,
    fid_between,
    load_classifier,
    train_classifier,
)
from sarnet.metrics.knn import knn_accuracy

__all__ = ["ClassifierCacheError", "FIDEvaluator", "LeNet", "fid_between", "knn_accuracy", "load_classifier",
           "train_classifier"]
