"""End-of-training FID (SPEC 6): the fast sampler's images vs the real set, on the project's classifier features."""


from sarnet.sampling import sample_images


def evaluate_fid(net, datamodule, cfg) -> dict:
    """mean/std/values of cfg.fid.n_sets FID sets of cfg.fid.n_gen images, generated as cfg.sample says."""
    from sarnet.metrics.fid import FIDEvaluator

    fid = cfg.fid
    evaluator = FIDEvaluator.from_dataset(datamodule.dataset, classes=datamodule.classes, real_set=fid.real_set,
                                          root=datamodule.root, n_gen=fid.n_gen, n_sets=fid.n_sets, seed=fid.seed,
                                          batch_size=fid.batch_size, device=next(net.parameters()).device)
    sample_cfg = dict(cfg.sample)
    return evaluator.evaluate(lambda n, generator: sample_images(net, n, sample_cfg, generator))
