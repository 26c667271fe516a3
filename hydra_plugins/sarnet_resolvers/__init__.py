"""Registers the project's OmegaConf resolvers (${sarnet.reference_th:...}) whenever Hydra starts.

Hydra imports every module under hydra_plugins/ while it looks for plugins, before it composes a config: the
configs then resolve in any process that composes them (hydra.compose in a test, train.py), not only in one that
happened to import sarnet first.
"""

import sarnet  # noqa: F401 -- sarnet/__init__.py registers the resolvers
