"""End-of-training FID (SPEC 6): the fast sampler's images vs the real set, on the project's classifier features."""

import time

from sarnet.sampling import sample_images


def evaluate_fid(net, datamodule, cfg, say=None) -> dict:
    """mean/std/values of cfg.fid.n_sets FID sets of cfg.fid.n_gen images, generated as cfg.sample says.
    say(fmt, *args): where progress goes (one line per FID set), e.g. log.info; None = silent."""
    from sarnet.metrics.fid import FIDEvaluator

    fid = cfg.fid
    if say:
        say("FID: %d sets of %d images vs %s; loading the feature classifier (trained once on first use, then cached)",
            fid.n_sets, fid.n_gen, fid.real_set)
    evaluator = FIDEvaluator.from_dataset(datamodule.dataset, classes=datamodule.classes, real_set=fid.real_set,
                                          root=datamodule.root, n_gen=fid.n_gen, n_sets=fid.n_sets, seed=fid.seed,
                                          batch_size=fid.batch_size, device=next(net.parameters()).device)
    sample_cfg = dict(cfg.sample)
    return evaluate_with_progress(evaluator, lambda n, generator: sample_images(net, n, sample_cfg, generator), say)


def evaluate_with_progress(evaluator, generate_fn, say=None, label="FID") -> dict:
    """evaluator.evaluate(generate_fn), saying "FID set k/n: value (s)" as each set is scored.

    FIDEvaluator.evaluate scores set k with one call of its metric's compute(); wrapping that call on this
    instance reports each set as it ends without changing the protocol's loop or its random streams."""
    metric = getattr(evaluator, "fid", None)
    if say is None or metric is None or not hasattr(metric, "compute"):
        return evaluator.evaluate(generate_fn)
    compute, t0, done = metric.compute, time.time(), [0]

    def compute_and_say():
        value = compute()
        done[0] += 1
        say("%s set %d/%d: %.3f (%.0f s)", label, done[0], evaluator.n_sets, float(value), time.time() - t0)
        return value

    metric.compute = compute_and_say
    try:
        return evaluator.evaluate(generate_fn)
    finally:
        metric.compute = compute  # torchmetrics keeps its own wrapped compute on the instance: put it back
