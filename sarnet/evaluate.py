"""End-of-training FID: the configured sampler's images vs the real set, on the project's LeNet features."""

import logging

from sarnet.progress import Progress
from sarnet.sampling import sample_images
from sarnet.settings import SampleSettings, th_text

log = logging.getLogger("sarnet")


def evaluate_fid(net, datamodule, cfg, say=log.info) -> dict:
    """{"mean", "std", "values", "protocol", "matched": {th_text: {"mean", "std", "values"}}, "knn"}: cfg.fid.n_sets
    FID sets of cfg.fid.n_gen images generated as cfg.sample says, then once more at each threshold of
    cfg.fid.extra_th (scored on the same z draws and real sets, so threshold effects are not protocol noise), and
    the kNN real-vs-fake accuracy. say(line): where the FID sets' lines go."""
    from sarnet.metrics.fid import FIDEvaluator

    fid = cfg.fid
    evaluator = FIDEvaluator.from_dataset(datamodule.dataset, classes=datamodule.classes, real_set=fid.real_set,
                                          root=datamodule.root, n_gen=fid.n_gen, n_sets=fid.n_sets, seed=fid.seed,
                                          batch_size=fid.batch_size, device=next(net.parameters()).device,
                                          dtype=fid.get("dtype", "float32"))
    settings = SampleSettings.of(cfg.sample)
    say(f"FID: {fid.n_sets} sets of {fid.n_gen} generated images vs {fid.real_set} (th {th_text(settings.th)})")
    result = evaluator.evaluate(lambda n, generator: sample_images(net, n, settings, generator), say)
    result |= {"protocol": evaluator.protocol(), "matched": {}, "knn": None}
    for th in fid.get("extra_th") or []:
        if th == settings.th:
            result["matched"][th_text(th)] = {k: result[k] for k in ("mean", "std", "values")}
            continue
        say(f"FID at th={th_text(th)} (same z draws and real sets)")
        result["matched"][th_text(th)] = evaluator.evaluate(
            lambda n, generator, s=settings | {"th": th}: sample_images(net, n, s, generator), say)
    if fid.knn.n:
        draw = lambda n, generator: sample_images(net, n, settings, generator)  # noqa: E731
        result["knn"] = evaluate_knn(evaluator.real_images, draw, fid, say)
    return result


def evaluate_knn(real_pool, generate_fn, fid, say=log.info) -> dict:
    """kNN real-vs-fake accuracy of fid.knn.n generated images vs as many draws from the real pool."""
    import torch

    from sarnet.metrics.fid import to_float
    from sarnet.metrics.knn import knn_accuracy

    knn = fid.knn
    g = torch.Generator().manual_seed(knn.seed)
    real = to_float(real_pool[torch.randint(len(real_pool), (knn.n,), generator=g)])
    bar, fake = Progress(knn.n, "kNN: generating"), []
    with torch.no_grad():
        for i in range(0, knn.n, fid.batch_size):
            fake.append(generate_fn(min(fid.batch_size, knn.n - i), g).cpu())
            bar.update(len(fake[-1]))
    bar.close()
    fake = torch.cat(fake)
    accuracy = knn_accuracy(real, fake, k=knn.k, seed=knn.seed)
    say(f"kNN real-vs-fake accuracy: {accuracy:.4f} (k {knn.k}, {knn.n} + {knn.n} images; 0.5 is ideal)")
    return {"accuracy": accuracy, "n": knn.n, "k": knn.k, "seed": knn.seed}
