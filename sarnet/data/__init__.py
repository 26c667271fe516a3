"""Data: acquisition from pinned sources (`sources`, run by `make data`) and in-memory LightningDataModules."""

import importlib

_EXPORTS = {name: "sources" for name in
            ("DataError", "prepare", "prepare_mnist", "prepare_fashion_mnist", "read_idx", "write_idx")}
_EXPORTS |= {name: "datamodules" for name in
             ("IdxDataModule", "MNISTDataModule", "FashionMNISTDataModule", "load_split", "real_images")}
__all__ = ["DataError", "FashionMNISTDataModule", "IdxDataModule", "MNISTDataModule", "load_split", "prepare",
           "prepare_fashion_mnist", "prepare_mnist", "read_idx", "real_images", "write_idx"]


def __getattr__(name):
    # Imported lazily: `python -m sarnet.data.sources` (make data) imports this package first, and an eager
    # import of sources here would load it twice (runpy warns) and pull in torch and lightning for nothing.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"sarnet.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'sarnet.data' has no attribute {name!r}")
