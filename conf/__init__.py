"""The configs, shipped inside the package as `sarnet.conf` (pyproject.toml maps this folder to it), so an
installed sarnet composes them as Hydra's pkg://sarnet.conf. Only the YAML files here are configs."""
