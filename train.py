"""Train a SarNET model: `python train.py [overrides]`, or a sweep: `python train.py -m latent_dim=8,16,32,64,128`."""

import hydra

from sarnet.train import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    return run_job(cfg)


if __name__ == "__main__":
    main()
