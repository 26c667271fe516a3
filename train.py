"""Train a SarNET model: `python train.py [overrides]`, or a sweep: `python train.py -m latent_dim=8,16,32,64,128`.
The same as `sarnet train`; the configs are conf/ (composed as the package's sarnet.conf)."""

from sarnet.cli.train import main

if __name__ == "__main__":
    main()
