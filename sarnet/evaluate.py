"""End-of-training FID: the configured sampler's images vs the real set, on the project's LeNet features."""

import logging

from sarnet.sampling import sample_images

log = logging.getLogger("sarnet")


def th_key(th) -> str:
    return "none" if th is None else f"{th:g}"


def evaluate_fid(net, datamodule, cfg) -> dict:
    """{"mean", "std", "values", "protocol", "matched": {th_key: {"mean", "std", "values"}}}: cfg.fid.n_sets FID
    sets of cfg.fid.n_gen images generated as cfg.sample says, then once more at each threshold of
    cfg.fid.extra_th (scored on the same z draws and real sets, so threshold effects are not protocol noise)."""
    from sarnet.metrics.fid import FIDEvaluator

    fid = cfg.fid
    evaluator = FIDEvaluator.from_dataset(datamodule.dataset, classes=datamodule.classes, real_set=fid.real_set,
                                          root=datamodule.root, n_gen=fid.n_gen, n_sets=fid.n_sets, seed=fid.seed,
                                          batch_size=fid.batch_size, device=next(net.parameters()).device)
    sample_cfg = dict(cfg.sample)
    log.info("FID: %d sets of %d generated images vs %s (th %s)", fid.n_sets, fid.n_gen, fid.real_set,
             th_key(sample_cfg.get("th")))
    result = evaluator.evaluate(lambda n, generator: sample_images(net, n, sample_cfg, generator), log.info)
    result |= {"protocol": evaluator.protocol(), "matched": {}}
    for th in fid.get("extra_th") or []:
        if th == sample_cfg.get("th"):
            result["matched"][th_key(th)] = {k: result[k] for k in ("mean", "std", "values")}
            continue
        log.info("FID at th=%s (same z draws and real sets)", th_key(th))
        cfg_th = sample_cfg | {"th": th}
        result["matched"][th_key(th)] = evaluator.evaluate(
            lambda n, generator, c=cfg_th: sample_images(net, n, c, generator), log.info)
    return result
