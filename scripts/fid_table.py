"""The latent-dim FID table from one or more sweep dirs, beside the thesis' numbers.

    python scripts/fid_table.py multirun/2026-11-25/14-10-00 [more dirs] [--out table] [--wandb]

Reads every results.json below the dirs; cells are (model, latent_dim), several training seeds are aggregated
(mean of the per-seed FID means; the +- is the std over seeds when there are several, else the std over FID
sets). Failed or missing cells are marked, never dropped silently. Writes <out>.md, <out>.png (FID vs latent
dim, one line per model, error bars) and <out>.json; --wandb logs the table and plot to a W&B run in the sweep's
group (offline without a key or a reachable server).
"""

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Thesis Table 4.1 (SPEC 6.5): TF-GAN MNIST-classifier FID, mean (std) over 10 sets (50 at L=128).
THESIS = {
    ("sarnet_vae", 128): (1.535, 0.0804), ("sarnet_vae", 64): (1.595, 0.0769), ("sarnet_vae", 32): (1.580, 0.0853),
    ("sarnet_vae", 16): (1.614, 0.0488), ("sarnet_vae", 8): (2.125, 0.0889),
    ("vae", 128): (2.018, 0.1225), ("vae", 64): (1.565, 0.0576), ("vae", 32): (1.611, 0.0948),
    ("vae", 16): (1.716, 0.0831), ("vae", 8): (2.876, 0.0783),
    ("sarnet", None): (28.996, None),
}
MODELS = ["sarnet_vae", "vae", "sarnet"]
LATENTS = [8, 16, 32, 64, 128]


def collect(dirs):
    """{(model, latent): [results...]} from every results.json under dirs (failed runs included)."""
    cells = defaultdict(list)
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            try:
                r = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                print(f"warning: skipping unreadable {path}: {e}", file=sys.stderr)
                continue
            model = r.get("model")
            latent = None if model == "sarnet" else r.get("latent_dim")
            cells[(model, latent)].append(r | {"path": str(path.parent)})
    return cells


def summarize(runs):
    ok = [r for r in runs if r.get("status") == "ok" and "fid/mean" in r.get("metrics", {})]
    failed = [r for r in runs if r.get("status") != "ok"]
    if not ok:
        return {"status": "failed" if failed else "missing", "failed": len(failed)}
    means = [r["metrics"]["fid/mean"] for r in ok]
    mean = sum(means) / len(means)
    if len(ok) > 1:
        std = math.sqrt(sum((m - mean) ** 2 for m in means) / len(means))
    else:
        std = ok[0]["metrics"].get("fid/std", 0.0)
    first = ok[0]
    return {"status": "ok", "fid_mean": mean, "fid_std": std, "seeds": sorted(r.get("seed") for r in ok),
            "failed": len(failed), "params_dense": first["params"]["dense"],
            "params_effective": first["params"]["effective"], "epochs": first.get("epochs"),
            "eval_ckpt": first.get("eval_ckpt", "best"),  # runs written before the key existed used "best"
            "wall_time_s": sum(r.get("wall_time_s", 0) for r in ok) / len(ok),
            "test_loss": sum(r["metrics"].get("test/loss", float("nan")) for r in ok) / len(ok)}


def table_rows(cells):
    rows = []
    latents = sorted({k[1] for k in cells if k[1] is not None} | set(LATENTS))
    for model in MODELS + sorted({k[0] for k in cells} - set(MODELS) - {None}):
        for latent in ([None] if model == "sarnet" else latents):
            s = summarize(cells.get((model, latent), []))
            if s["status"] == "missing" and (model, latent) not in THESIS:
                continue
            rows.append({"model": model, "latent_dim": latent, **s, "thesis": THESIS.get((model, latent))})
    return rows


def fmt_fid(row):
    if row["status"] != "ok":
        return f"— ({row['status']})"
    return f"{row['fid_mean']:.3f} ± {row['fid_std']:.3f}"


def markdown(rows):
    lines = ["| Model | L | FID (ours) | seeds | FID (thesis) | params dense / effective | epochs | weights | "
             "test neg-ELBO | wall time |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        thesis = "—"
        if r["thesis"] is not None:
            mean, std = r["thesis"]
            thesis = f"{mean:.3f}" + ("" if std is None else f" ± {std:.3f}")
        cells = [r["model"], "—" if r["latent_dim"] is None else r["latent_dim"], fmt_fid(r)]
        if r["status"] == "ok":
            loss = r["test_loss"] if r["model"] != "sarnet" and math.isfinite(r["test_loss"]) else None
            params = f"{r['params_dense'] / 1e6:.2f} M / {r['params_effective'] / 1e6:.2f} M"
            cells += [len(r["seeds"]), thesis, params, r["epochs"], r["eval_ckpt"],
                      "—" if loss is None else f"{loss:.1f}", f"{r['wall_time_s'] / 60:.1f} min"]
        else:
            cells += [0, thesis, "—", "—", "—", "—", "—"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in MODELS:
        pts = [r for r in rows if r["model"] == model and r["status"] == "ok" and r["latent_dim"] is not None]
        if pts:
            ax.errorbar([r["latent_dim"] for r in pts], [r["fid_mean"] for r in pts],
                        yerr=[r["fid_std"] for r in pts], marker="o", capsize=3, label=f"{model} (ours)")
        ref = [(k[1], v[0]) for k, v in THESIS.items() if k[0] == model and k[1] is not None]
        if ref:
            ax.plot(*zip(*sorted(ref)), linestyle=":", marker="x", alpha=0.6, label=f"{model} (thesis)")
    for r in rows:
        if r["model"] == "sarnet" and r["status"] == "ok":
            ax.axhline(r["fid_mean"], color="grey", linestyle="--", label="simple SarNET (ours)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(LATENTS, [str(v) for v in LATENTS])
    ax.set_xlabel("latent dim L")
    ax.set_ylabel("FID (classifier features)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_wandb(rows, dirs, png, group=None, project=None):
    """The table and the plot into a W&B run in the sweep's own group and project (read from the jobs' run files),
    so the sweep's summary sits beside its jobs in the W&B UI."""
    import wandb

    from sarnet import tracking
    where = tracking.sweep_wandb(dirs)
    group, project = group or where["group"], project or where["project"]
    mode = tracking.choose_mode()  # never prompts or hangs: offline without a key or a reachable server
    run = wandb.init(project=project, group=group, job_type="fid_table", name=f"fid_table {group}",
                     dir=str(dirs[0]), mode=mode, config={"sweeps": [str(d) for d in dirs]},
                     settings=wandb.Settings(init_timeout=30, silent=True))
    cols = ["model", "latent_dim", "status", "fid_mean", "fid_std", "thesis_fid", "params_dense", "epochs"]
    data = [[r["model"], r["latent_dim"], r["status"], r.get("fid_mean"), r.get("fid_std"),
             r["thesis"][0] if r["thesis"] else None, r.get("params_dense"), r.get("epochs")] for r in rows]
    run.log({"fid_table": wandb.Table(columns=cols, data=data),
             "fid_plot": wandb.Image(str(png), caption="FID vs latent dim (ours and the thesis')")})
    run.summary.update({f"fid/{r['model']}" + (f"-L{r['latent_dim']}" if r["latent_dim"] else ""): r["fid_mean"]
                        for r in rows if r["status"] == "ok"})
    print(f"W&B: logged the table and plot to run {run.id} (project {project}, group {group}, {mode})")
    run.finish()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output prefix (default <first dir>/fid_table)")
    p.add_argument("--wandb", action="store_true", help="log the table and plot to a W&B run in the sweep's group")
    p.add_argument("--wandb-group", default=None, help="W&B group (default: the sweep jobs' group)")
    p.add_argument("--wandb-project", default=None, help="W&B project (default: the sweep jobs' project)")
    args = p.parse_args(argv)
    for d in args.dirs:
        if not d.is_dir():
            p.error(f"{d} is not a directory (pass a sweep dir such as multirun/<date>/<time>)")
    rows = table_rows(collect(args.dirs))
    out = args.out or args.dirs[0] / "fid_table"
    md = markdown(rows)
    print(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    plot(rows, out.with_suffix(".png"))
    print(f"\nwrote {out.with_suffix('.md')}, {out.with_suffix('.png')}, {out.with_suffix('.json')}")
    if args.wandb:
        log_wandb(rows, args.dirs, out.with_suffix(".png"), args.wandb_group, args.wandb_project)


if __name__ == "__main__":
    main()
