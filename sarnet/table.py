"""The latent-dim FID table from one or more sweep dirs, beside the thesis' numbers.

    sarnet table multirun/fid_table [more dirs] [--out table] [--wandb]

Reads every results.json below the dirs. Runs are only ever merged when everything a value depends on matches:
one table per dataset/classes, eval weights and FID protocol (feature network + sha256 + compute dtype, n_gen,
n_sets, real set, seed); within it one row per model, latent dim, epochs, training precision and sampling settings
(dtype included), aggregating *distinct* training seeds (the same run given twice counts once; the same seed twice in
one cell is refused). Per cell: mean over seeds, seed std (ddof 1), mean set std; per latent dim (and precision) a
Welch t-test of sarnet_vae vs vae over seeds; per model and latent dim trained at two precisions (e.g. a sweep over
trainer.precision=32-true,bf16-mixed) a Welch t-test of their FIDs and test losses over seeds. The thesis
column appears only in tables whose protocol is the thesis' (MNIST-5, 10 x 10k images vs the resampled test
set, the LeNet features). Tables at matched thresholds (fid.extra_th) follow. Writes <out>.md, <out>.png (FID vs
latent dim per model, its thesis line in the same colour) and <out>.json; --wandb logs the table and plot to a
W&B run in the sweep's group (offline without a key or a reachable server).
"""

import hashlib
import json
import math
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

from sarnet import cli

# Thesis Table 4.1: TF-GAN MNIST-classifier FID, mean (std) over 10 sets (50 at L=128), one training seed each.
THESIS = {
    ("sarnet_vae", 128): (1.535, 0.0804), ("sarnet_vae", 64): (1.595, 0.0769), ("sarnet_vae", 32): (1.580, 0.0853),
    ("sarnet_vae", 16): (1.614, 0.0488), ("sarnet_vae", 8): (2.125, 0.0889),
    ("vae", 128): (2.018, 0.1225), ("vae", 64): (1.565, 0.0576), ("vae", 32): (1.611, 0.0948),
    ("vae", 16): (1.716, 0.0831), ("vae", 8): (2.876, 0.0783),
    ("sarnet", None): (28.996, None),
}
MODELS = ["sarnet_vae", "vae", "sarnet"]  # the thesis' models, whose recipes (conf/recipe/) are the thesis' own
COLORS = {"sarnet_vae": "tab:blue", "vae": "tab:orange", "sarnet": "tab:green"}
LATENTS = [8, 16, 32, 64, 128]
DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # the feature network's data: the FID's scale
PROTOCOL_KEYS = ("features", "features_sha256", "n_gen", "n_sets", "real_set", "seed", "dtype")


NUM, NULL = (int, float), type(None)
# What the tables read of a run with FID, with the JSON types train.py writes (NULL: may be null or absent; a tuple:
# any of its kinds; [kind]: a list of that kind; a dict: the kinds of its fields, {"*": kind} of every field)
READ = {"model": str, "seed": int, "epochs": int, "wall_time_s": NUM, "precision": str, "eval_ckpt": str,
        "latent_dim": (int, NULL), "dataset": (str, NULL), "classes": ([int], NULL), "first_patch": (str, NULL),
        "device": (str, NULL), "knn": ({"n": int, "k": int, "seed": int}, NULL),
        "fid_matched": {"*": {"mean": NUM, "std": (*NUM, NULL)}},
        "params": {"dense": int, "effective": int},
        "sampling": {"method": str, "th": (*NUM, NULL), "z_scale": (*NUM, NULL), "dtype": str, "mode": (str, NULL),
                     "temperature": (*NUM, NULL), "regression": ({"*": (*NUM, bool)}, NULL)},
        "fid_protocol": {"n_gen": int, "n_sets": int, "seed": int, "real_set": str, "dtype": str, "features": str,
                         "features_sha256": (str, NULL)}}


class TableError(ValueError):
    pass


def collect(dirs):
    """(ok runs, failed runs) from every results.json under dirs; a run dir reached twice is read once."""
    seen, ok, failed = set(), [], []
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            if "wandb" in path.relative_to(d).parts:  # the copy a W&B run keeps of its run's results.json
                continue
            real = path.resolve()
            if real in seen:
                print(f"warning: {path.parent} given twice: counted once", file=sys.stderr)
                continue
            seen.add(real)
            try:
                r = json.loads(path.read_text())
                malformed = _malformed(r)
            except (OSError, ValueError) as e:
                malformed = f"unreadable ({type(e).__name__}: {e})"
            if malformed:
                print(f"warning: skipping {path}: {malformed}", file=sys.stderr)
                continue
            r |= {"path": str(path.parent), "latent_dim": None if r.get("model") == "sarnet" else r.get("latent_dim")}
            if r.get("status") != "ok":
                failed.append(r)
            elif "fid/mean" in r["metrics"]:  # a run without FID (fid=off) has no cell
                ok.append(r)
    return ok, failed


def _malformed(r) -> str | None:
    """Why a results.json cannot be read as a run's record (None if it can): the fields the table reads."""
    if not isinstance(r, dict):
        return f"not a JSON object but a {type(r).__name__}"
    if r.get("status") != "ok":
        return None  # a failed run: listed with its error
    metrics = r.get("metrics")
    read = ("fid/mean", "fid/std", "test/loss", "knn/accuracy")
    if not isinstance(metrics, dict) or not all(isinstance(metrics.get(k, 0), (int, float)) for k in read):
        return f"status ok but its metrics are not an object whose {', '.join(read)} are numbers"
    if "fid/mean" in metrics and (wrong := list(_mistyped(r, READ))):
        return f"status ok but its {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} missing or not of the " \
               f"type train.py writes"
    return None


def _mistyped(value, kind, name=""):
    """The names of the fields in `value` that lack the JSON kind `kind` (READ's notation) gives them."""
    if isinstance(kind, tuple):  # of its kinds, the one that fits best (a dict or a list: named to its fields)
        yield from min((list(_mistyped(value, k, name)) for k in kind), key=len)
    elif isinstance(kind, list):
        yield from [w for v in value for w in _mistyped(v, kind[0], name)][:1] if isinstance(value, list) else [name]
    elif isinstance(kind, dict):
        kind = dict.fromkeys(value, kind["*"]) if "*" in kind and isinstance(value, dict) else kind
        yield from [w for k, v in kind.items() for w in _mistyped(value.get(k), v, f"{name}.{k}".lstrip("."))] \
            if isinstance(value, dict) else [name]
    elif not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        yield name


def table_key(r):
    """What every value of one table must share."""
    p, knn = r.get("fid_protocol") or {}, r.get("knn") or {}
    return (r.get("dataset"), tuple(r["classes"]) if r.get("classes") else None, r.get("eval_ckpt"),
            *(p.get(k) for k in PROTOCOL_KEYS), tuple(knn.get(k) for k in ("n", "k", "seed")))


def describe(key):
    dataset, classes, weights, *p, knn = key
    proto = dict(zip(PROTOCOL_KEYS, p))
    return (f"{dataset} classes {list(classes) if classes else 'all'}, {weights} weights; FID: {proto['n_sets']} x "
            f"{proto['n_gen']} images vs {proto['real_set']}, seed {proto['seed']}, features {proto['features']} "
            f"({str(proto['features_sha256'])[:12]}{', ' + proto['dtype'] if proto['dtype'] != 'float32' else ''})" +
            (f"; kNN: n {knn[0]}, k {knn[1]}, seed {knn[2]}" if knn[0] else ""))


def thesis_protocol(key):
    """The thesis' protocol: MNIST fives, >= 10 sets of 10k images vs the resampled test set, scored by the
    project's calibrated stand-in for the thesis' feature network (the shipped LeNet weights)."""
    from sarnet.metrics.fid import SHIPPED_SHA256

    dataset, classes, _, *p, _ = key
    proto = dict(zip(PROTOCOL_KEYS, p))
    return (dataset == "mnist" and classes == (5,) and proto["features_sha256"] == SHIPPED_SHA256.get("mnist")
            and proto["n_gen"] == 10000 and (proto["n_sets"] or 0) >= 10 and proto["real_set"] == "test_resampled"
            and proto["dtype"] == "float32")


def recipe_epochs(model) -> int | None:
    """The epochs of the model's recipe (conf/recipe/<model>.yaml), the thesis' for its three models: 200, 250, 500.
    The thesis' value sits beside a cell only when the cell trained that long."""
    if model not in MODELS:
        return None
    from sarnet import packaged_config
    return packaged_config(f"recipe/{model}").trainer.max_epochs


def strict(r) -> bool:
    """Patch 0 predicted (model.net.first_patch=predicted) rather than copied, the reference's "given": another
    model, never one cell with the reference's."""
    return r.get("first_patch") == "predicted"


def cell_key(r):
    """What one cell's runs share. Training precision and sampling dtype are last (the matched tables slice)."""
    s = r["sampling"]
    regression = tuple(sorted((s.get("regression") or {}).items())) or None
    return (r.get("model"), r.get("latent_dim"), r.get("epochs"), strict(r), s.get("method"), s.get("th"),
            s.get("z_scale"), s.get("mode", "mean"), s.get("temperature"), regression, r["precision"],
            s.get("dtype"))


def draw_label(r):
    """What sets a row apart from the reference's model, float32 training and draw (a strict first patch; pixels not
    the sigmoid means; bf16 training or sampling): shown beside the model name."""
    s = r["sampling"]
    parts = ["patch 0 predicted"] if strict(r) else []
    parts += [f"{s['mode']} T={s['temperature']:g}"] if s.get("mode", "mean") != "mean" else []
    parts += [", ".join(f"{k} {v}" for k, v in s["regression"].items())] if s.get("regression") else []
    parts += [f"trained {r['precision']}"] if r["precision"] != "32-true" else []
    parts += [f"sampled {s['dtype']}"] if s["dtype"] != "float32" else []
    return f" ({'; '.join(parts)})" if parts else ""


def stats(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std


def summarize(runs, metric=lambda r: (r["metrics"]["fid/mean"], r["metrics"].get("fid/std"))):
    """One cell: distinct seeds only (the same seed twice is refused: two runs that should be one)."""
    by_seed = {}
    for r in runs:
        if r.get("seed") in by_seed:
            raise TableError(f"seed {r.get('seed')} appears twice in cell {cell_key(r)}: {by_seed[r['seed']]['path']} "
                             f"and {r['path']} (a copy, or runs that differ in a setting the table does not show, e.g. "
                             f"a swept learning rate): give the table only one of them")
        by_seed[r.get("seed")] = r
    runs = [by_seed[k] for k in sorted(by_seed, key=str)]
    pairs = [metric(r) for r in runs]
    mean, seed_std = stats([m for m, _ in pairs])
    set_stds = [s for _, s in pairs if s is not None]
    first = runs[0]
    losses = [r["metrics"]["test/loss"] for r in runs if "test/loss" in r["metrics"]]
    knn = [r["metrics"]["knn/accuracy"] for r in runs if "knn/accuracy" in r["metrics"]]
    walls = [r.get("wall_time_s", 0) for r in runs]
    return {"status": "ok", "fid_mean": mean, "fid_seed_std": seed_std,
            "fid_set_std": sum(set_stds) / len(set_stds) if set_stds else None, "fid_seed_means": [m for m, _ in pairs],
            "seeds": list(by_seed), "params_dense": first["params"]["dense"],
            "params_effective": first["params"]["effective"], "epochs": first.get("epochs"),
            "eval_ckpt": first["eval_ckpt"], "th": (first.get("sampling") or {}).get("th"),
            "wall_time_s": sum(walls) / len(walls), "wall_time_range_s": [min(walls), max(walls)],
            # a mean over several machines (or runs that predate results.json's "device") would describe none
            "devices": sorted({str(r.get("device")) for r in runs}),
            "test_loss": sum(losses) / len(losses) if losses else None, "test_losses": losses,
            "knn_accuracy": sum(knn) / len(knn) if len(knn) == len(runs) else None, "paths": [r["path"] for r in runs]}


def student_t_sf2(t, df):
    """Two-sided p-value of Student's t: I_{df/(df+t^2)}(df/2, 1/2), the regularized incomplete beta function
    by its continued fraction (Numerical Recipes' betacf), so no scipy is needed."""
    x, a, b = df / (df + t * t), df / 2, 0.5
    if x <= 0 or x >= 1:
        return float(x >= 1)

    def cf(x, a, b):
        c, d = 1.0, 1 - (a + b) * x / (a + 1)
        d = 1 / (d if abs(d) > 1e-300 else 1e-300)
        h = d
        for m in range(1, 300):
            for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                        -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
                d = 1 + num * d
                d = 1 / (d if abs(d) > 1e-300 else 1e-300)
                c = 1 + num / c if abs(1 + num / c) > 1e-300 else 1e-300
                h *= d * c
            if abs(d * c - 1) < 1e-14:
                break
        return h

    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    return front * cf(x, a, b) / a if x < (a + 1) / (a + b + 2) else 1 - front * cf(1 - x, b, a) / b


def welch(a, b):
    """Welch's t-test of two samples (>= 2 each): (t, df, two-sided p)."""
    (ma, sa), (mb, sb) = stats(a), stats(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    if va + vb == 0:
        return math.copysign(math.inf, ma - mb) if ma != mb else 0.0, math.nan, float(ma == mb)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    return t, df, student_t_sf2(t, df)


def build_tables(ok, failed):
    """[{description, thesis_protocol, rows, welch, precision_welch, matched: {th: {rows, welch}}}] plus the failed
    runs."""
    tables = defaultdict(list)
    for r in ok:
        tables[table_key(r)].append(r)
    models_seen = {r.get("model") for r in ok + failed}
    out = []
    for key in sorted(tables, key=lambda k: (not thesis_protocol(k), str(k))):
        runs, thesis = tables[key], thesis_protocol(key)
        cells = defaultdict(list)
        for r in runs:
            cells[cell_key(r)].append(r)
        # the thesis' values beside cells of its protocol and its recipe only (a 3-epoch sweep is no comparison)
        rows = [{"model": k[0], "latent_dim": k[1], "draw": draw_label(v[0]), "precision": k[-2],
                 "sample_dtype": k[-1], **summarize(v),
                 "thesis": THESIS.get((k[0], k[1])) if thesis and k[2] == recipe_epochs(k[0]) else None}
                for k, v in cells.items()]
        at_recipe = {r["model"] for r in rows if r["epochs"] == recipe_epochs(r["model"])}
        if thesis:  # the thesis' cells this table lacks, for the models given (its value: see above)
            have = {(r["model"], r["latent_dim"]) for r in rows}
            for (model, latent), ref in THESIS.items():
                if model in models_seen and (model, latent) not in have:
                    n_failed = sum(1 for f in failed if (f.get("model"), f.get("latent_dim")) == (model, latent))
                    rows.append({"model": model, "latent_dim": latent, "status": "failed" if n_failed else "missing",
                                 "failed": n_failed, "thesis": ref if model in at_recipe else None})
        order = {m: i for i, m in enumerate(MODELS)}
        rows.sort(key=lambda r: (order.get(r["model"], 99), str(r["model"]), r["latent_dim"] or 0,
                                 r.get("epochs") or 0))
        matched = {}
        for th in sorted({t for r in runs for t in (r.get("fid_matched") or {})}):
            m_cells = defaultdict(list)
            for r in runs:
                if th in (r.get("fid_matched") or {}):
                    cell = cell_key(r)
                    m_cells[cell[:4] + cell[6:]].append(r)  # all but method (exact either way) and th (set here):
                    # z_scale and the draw still part cells
            m_rows = [{"model": k[0], "latent_dim": k[1], "draw": draw_label(v[0]), "precision": k[-2],
                       "sample_dtype": k[-1], **summarize(
                           v, lambda r, th=th: (r["fid_matched"][th]["mean"], r["fid_matched"][th]["std"])), "th": th}
                      for k, v in m_cells.items()]
            m_rows.sort(key=lambda r: (order.get(r["model"], 99), r["latent_dim"] or 0))
            matched[th] = {"rows": m_rows, "welch": welch_rows(m_rows)}
        out.append({"description": describe(key), "dataset": key[0], "thesis_protocol": thesis, "rows": rows,
                    "welch": welch_rows(rows), "precision_welch": precision_welch(cells), "matched": matched})
    return out


def welch_rows(rows):
    """Welch t-tests over training seeds (same table, so same protocol) at each latent dim where both sides have
    >= 2 seeds: sarnet_vae vs vae, the reference's models and draws ("a" and "b" name the sides; the test
    the thesis' claim needs), then sarnet_vae with patch 0 given (the reference) vs predicted (first_patch)."""
    found = []
    sides = [("sarnet_vae", "", "vae", ""), ("sarnet_vae", "", "sarnet_vae", " (patch 0 predicted)")]
    for a_model, a_draw, b_model, b_draw in sides:
        for latent in sorted({r["latent_dim"] for r in rows if r["latent_dim"] is not None}):
            pair = [[r for r in rows if r["model"] == m and r["latent_dim"] == latent and r["status"] == "ok"
                     and r.get("draw", "") == d] for m, d in ((a_model, a_draw), (b_model, b_draw))]
            if all(len(p) == 1 and len(p[0]["seeds"]) >= 2 for p in pair):
                a, b = pair[0][0]["fid_seed_means"], pair[1][0]["fid_seed_means"]
                t, df, p = welch(a, b)
                found.append({"latent_dim": latent, "a": a_model + a_draw, "b": b_model + b_draw,
                              "mean_a": stats(a)[0], "mean_b": stats(b)[0], "t": t, "df": df, "p": p,
                              "seeds": [len(a), len(b)]})
    return found


def precision_welch(cells):
    """Cells that differ only in training precision, float32 (32-true) against each other precision, where both
    have >= 2 seeds: Welch t-tests over seeds of FID and of test loss (the VAEs' negative ELBO per image)."""
    by_rest = defaultdict(dict)
    for k, runs in cells.items():
        by_rest[k[:-2] + k[-1:]][k[-2]] = runs
    found = []
    for rest, by_precision in sorted(by_rest.items(), key=lambda item: str(item[0])):
        if "32-true" not in by_precision:
            continue
        base = summarize(by_precision["32-true"])
        for precision, runs in sorted(by_precision.items()):
            other = summarize(runs)
            for metric, key in (("fid", "fid_seed_means"), ("test_loss", "test_losses")):
                a, b = base[key], other[key]
                if precision == "32-true" or len(a) < 2 or len(b) < 2 or len(a) != len(base["seeds"]) or \
                        len(b) != len(other["seeds"]):
                    continue
                t, df, p = welch(a, b)
                found.append({"model": rest[0], "latent_dim": rest[1], "precision": precision, "metric": metric,
                              "32-true": stats(a)[0], "other": stats(b)[0], "t": t, "df": df, "p": p,
                              "seeds": [len(a), len(b)]})
    return found


def fmt(v, digits=3):
    return "—" if v is None else "NaN" if math.isnan(v) else f"{v:.{digits}f}"


def wall_time(r):
    """The mean where every seed ran on one recorded device, else the range: times of unlike machines don't average."""
    lo, hi = r.get("wall_time_range_s") or (r["wall_time_s"], r["wall_time_s"])
    one_device = len(r.get("devices", [])) == 1 and r["devices"] != ["None"]
    return f"{r['wall_time_s'] / 60:.1f} min" if one_device or lo == hi else f"{lo / 60:.1f}–{hi / 60:.1f} min"


def markdown_rows(rows, thesis):
    head = ("| Model | L | FID (ours) | seed std | set std | seeds |" + (" FID (thesis) |" if thesis else "") +
            " kNN acc. | th | params dense / effective | epochs | weights | test loss | wall time |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["model"] + r.get("draw", ""), "—" if r["latent_dim"] is None else r["latent_dim"]]
        if r["status"] == "ok":
            cells += [fmt(r["fid_mean"]), fmt(r["fid_seed_std"]), fmt(r["fid_set_std"]), len(r["seeds"])]
        else:
            cells += [f"— ({r['status']})", "—", "—", 0]
        if thesis:
            ref = r.get("thesis")
            cells.append("—" if ref is None else f"{ref[0]:.3f}" + ("" if ref[1] is None else f" ± {ref[1]:.3f}"))
        if r["status"] == "ok":
            params = f"{r['params_dense'] / 1e6:.2f} M / {r['params_effective'] / 1e6:.2f} M"
            loss = r["test_loss"] if r["model"] != "sarnet" else None
            knn = None if r.get("knn_accuracy") is None else 100 * r["knn_accuracy"]
            th = r["th"] if r["th"] is not None else "none"
            cells += [fmt(knn, 1) + ("" if knn is None else " %"), th, params, r["epochs"], r["eval_ckpt"],
                      fmt(loss, 1), wall_time(r)]
        else:
            cells += ["—"] * 7
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def markdown_welch(found):
    lines = []
    for a, b in dict.fromkeys((w["a"], w["b"]) for w in found):
        lines += ["", f"Welch t-test over training seeds, {a} vs {b} (two-sided):", "",
                  "| L | " + a + " | " + b + " | t | df | p | seeds |", "|---|---|---|---|---|---|---|"]
        for w in (w for w in found if (w["a"], w["b"]) == (a, b)):
            lines.append(f"| {w['latent_dim']} | {w['mean_a']:.3f} | {w['mean_b']:.3f} | {w['t']:.2f} | "
                         f"{w['df']:.1f} | {w['p']:.3g} | {w['seeds'][0]} / {w['seeds'][1]} |")
    return lines


def markdown_precision_welch(found):
    if not found:
        return []
    lines = ["", "Welch t-test over training seeds, float32 training (32-true) vs another trainer.precision, sampled "
             "alike (two-sided):", "", "| model | L | metric | 32-true | other | precision | t | df | p | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in found:
        lines.append(f"| {w['model']} | {w['latent_dim'] or '—'} | {w['metric']} | {w['32-true']:.3f} | "
                     f"{w['other']:.3f} | {w['precision']} | {w['t']:.2f} | {w['df']:.1f} | {w['p']:.3g} | "
                     f"{w['seeds'][0]} / {w['seeds'][1]} |")
    return lines


def markdown(tables, failed):
    lines = []
    for i, t in enumerate(tables, 1):
        lines += [f"### Table {i}: {t['description']}", ""] + markdown_rows(t["rows"], t["thesis_protocol"])
        lines += markdown_welch(t["welch"]) + markdown_precision_welch(t["precision_welch"])
        for th, m in t["matched"].items():
            lines += ["", f"Matched threshold th = {th} for every model (same z draws and real sets):", ""]
            lines += markdown_rows(m["rows"], False) + markdown_welch(m["welch"])
        lines.append("")
    if failed:
        lines += ["### Failed jobs", ""] + [f"- {f['path']}: {f.get('error', f.get('status'))}" for f in failed]
    return "\n".join(lines)


def plot(table, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    order = {m: i for i, m in enumerate(MODELS)}
    # one series per model, draw and training length: a strict first patch, another draw or another length is its
    # own line (dashed, square markers), never joined to the reference model's points at the recipe's epochs
    for model, draw, epochs in sorted({(r["model"], r.get("draw", ""), r.get("epochs")) for r in rows
                                       if r["status"] == "ok"},
                                      key=lambda k: (order.get(k[0], 99), k[0], k[1], str(k[2]))):
        color, plain = COLORS.get(model), not draw and epochs == recipe_epochs(model)
        label = f"{model}{draw}, {epochs} epochs (ours)"
        mine = [r for r in rows if r["status"] == "ok" and (r["model"], r.get("draw", ""), r.get("epochs")) ==
                (model, draw, epochs) and _plottable(r["fid_mean"])]  # a NaN FID: in the table, not on a log scale
        pts = [r for r in mine if r["latent_dim"] is not None]
        if pts:
            err = [r["fid_seed_std"] if r["fid_seed_std"] is not None else r["fid_set_std"] or 0 for r in pts]
            err = [e if math.isfinite(e) else 0 for e in err]
            ax.errorbar([r["latent_dim"] for r in pts], [r["fid_mean"] for r in pts], yerr=err, capsize=3,
                        color=color, marker="o" if plain else "s", linestyle="-" if plain else "--", label=label)
        for r in mine:
            if r["latent_dim"] is None:
                ax.axhline(r["fid_mean"], color=color, linestyle="--", label=label)
    # the thesis' curve once per model, where build_tables put its values: beside runs of its protocol and recipe
    for model in sorted({r["model"] for r in rows if r.get("thesis")}, key=lambda m: (order.get(m, 99), m)):
        ref = {r["latent_dim"]: r["thesis"][0] for r in rows if r["model"] == model and r.get("thesis")}
        label, color = f"{model}, {recipe_epochs(model)} epochs (thesis)", COLORS.get(model)
        if None in ref:
            ax.axhline(ref.pop(None), color=color, linestyle=":", alpha=0.7, label=label)
        if ref:
            ax.plot(*zip(*sorted(ref.items())), linestyle=":", marker="x", alpha=0.7, color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(LATENTS, [str(v) for v in LATENTS])
    ax.set_xlabel("latent dim L")
    ax.set_ylabel(f"FID ({DATASETS.get(table['dataset'], table['dataset'] or '')} LeNet features)")
    ax.set_yscale("log")
    ax.set_title("\n".join(textwrap.wrap(table["description"], 110)), fontsize=6)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: inside, it hides points
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plottable(v) -> bool:
    return math.isfinite(v) and v > 0


def log_wandb(tables, dirs, png, group=None, project=None):
    """The table and the plot into a W&B run in the sweep's own group and project (read from the jobs' run files),
    so the sweep's summary sits beside its jobs in the W&B UI."""
    import wandb

    from sarnet import tracking
    where = tracking.sweep_wandb(dirs)
    group, project = group or where["group"], project or where["project"]
    mode = tracking.choose_mode()  # never prompts or hangs: offline without a key or a reachable server
    # one W&B run per table: a relaunched sweep (or `sarnet table` again) resumes it, not a second run beside it
    table = [project, group, str(Path(png).resolve()), *sorted(str(Path(d).resolve()) for d in dirs)]
    run_id = hashlib.sha256(json.dumps(table).encode()).hexdigest()[:12]
    run = wandb.init(project=project, group=group, job_type="fid_table", name=f"fid_table {group}", id=run_id,
                     resume="allow", dir=str(dirs[0]), mode=mode, config={"sweeps": [str(d) for d in dirs]},
                     settings=wandb.Settings(init_timeout=30, silent=True))
    cols = ["model", "latent_dim", "status", "fid_mean", "fid_seed_std", "fid_set_std", "seeds", "knn_accuracy",
            "thesis_fid", "th", "params_dense", "epochs", "table", "protocol"]
    data = [[r["model"], r["latent_dim"], r["status"], r.get("fid_mean"), r.get("fid_seed_std"), r.get("fid_set_std"),
             len(r.get("seeds", [])), r.get("knn_accuracy"), r["thesis"][0] if r.get("thesis") else None, r.get("th"),
             r.get("params_dense"), r.get("epochs"), i + 1, t["description"]]
            for i, t in enumerate(tables) for r in t["rows"]]
    run.log({"fid_table": wandb.Table(columns=cols, data=data),
             "fid_plot": wandb.Image(str(png), caption="FID vs latent dim (ours and the thesis')")})
    if tables:  # the first table (the thesis' protocol when present) as plain summary numbers
        run.summary.update({f"fid/{r['model']}" + (f"-L{r['latent_dim']}" if r["latent_dim"] else ""): r["fid_mean"]
                            for r in tables[0]["rows"] if r["status"] == "ok"})
    print(f"W&B: logged the table and plot to run {run.id} (project {project}, group {group}, {mode})")
    run.finish()


def write(dirs, out=None, wandb=False, wandb_group=None, wandb_project=None) -> Path:
    """The tables of the runs below `dirs`: <out>.md, .png (one per table) and .json (out default:
    <first dir>/fid_table); with wandb, a W&B run in the sweep's group. Returns the .md path."""
    ok, failed = collect(dirs)
    if not ok:
        raise TableError(f"no finished run with an FID under {', '.join(map(str, dirs))} ({len(failed)} failed or "
                         f"stopped; a run with fid=off has none): nothing to tabulate")
    tables = build_tables(ok, failed)
    out = Path(out or Path(dirs[0]) / "fid_table")
    md = markdown(tables, failed)
    print(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md + "\n")
    out.with_suffix(".json").write_text(json.dumps({"tables": tables, "failed": failed}, indent=2, default=str))
    pngs = []
    for i, t in enumerate(tables):
        pngs.append(out.with_suffix(".png") if i == 0 else out.with_name(f"{out.name}-{i + 1}.png"))
        plot(t, pngs[-1])
    print(f"\nwrote {out.with_suffix('.md')}, {', '.join(map(str, pngs))}, {out.with_suffix('.json')}")
    if wandb:
        log_wandb(tables, dirs, out.with_suffix(".png"), wandb_group, wandb_project)
    return out.with_suffix(".md")


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--out", type=lambda a: Path(cli.writable(a)), default=None,
                   help="output prefix (default <first dir>/fid_table)")
    p.add_argument("--wandb", action="store_true", help="log the table and plot to a W&B run in the sweep's group")
    p.add_argument("--wandb-group", default=None, help="W&B group (default: the sweep jobs' group)")
    p.add_argument("--wandb-project", default=None, help="W&B project (default: the sweep jobs' project)")
    args = p.parse_args(argv)
    for d in args.dirs:
        if not d.is_dir():
            p.error(f"{d} is not a directory (pass a sweep dir such as multirun/<date>/<time>)")
    try:
        write(args.dirs, args.out, args.wandb, args.wandb_group, args.wandb_project)
    except TableError as e:
        p.error(str(e))
