"""The project's table of bad inputs: what a careless user could type or leave lying around, and the field or file
the one-line refusal must name. tests/test_bad_inputs.py runs it; every kind is refused before the work it would
waste, in one line, with no traceback and nothing left in the run dir (Hydra's .hydra aside).

Kinds, and what "before work" means for each:
- field:    one field's type or range (train.py overrides): before torch is imported
- hydra:    an override Hydra cannot compose (unknown key, group option; bad syntax): before torch, exit 2
- cli:      a command's usage error (argv of `sarnet`): before torch, exit 2
- cross:    fields that do not go together, or an object that does not build: before any data is read
- resource: a value beyond a stated cap (time, memory): before the work that would hit it
- file:     a data file, checkpoint or FID weights file missing or damaged: before any training step
{ckpt}, {damaged}, {data_*} stand for files the test makes (a small checkpoint, a truncated one, data dirs).
"""

from tests.conftest import QUICK

BASE = QUICK  # what every train entry is added to

# field: one field's type or range, refused in a line naming it, "<key>=<value> is invalid: ...": the text the
# line must contain is "<key>=" of the last override, or a tuple's (overrides, text).
FIELD = [
    ("seed=-1", "seed=-1"), "seed=4294967296", "seed=abc", "seed=1.5", "latent_dim=0", "latent_dim=1.5",
    "latent_dim=true", ("latent_dim=abc", "latent_dim='abc'"), "run_test=maybe", "resume_override_optimizer=yes",
    "eval_ckpt=final", "data_dir=", "trainer.max_epochs=0", "trainer.max_epochs=abc",
    "trainer.check_val_every_n_epoch=0", "trainer.limit_train_batches=0", "trainer.limit_val_batches=2.5",
    "trainer.limit_test_batches=-1", "trainer.log_every_n_steps=0", "trainer.enable_progress_bar=maybe",
    "data.batch_size=0", "data.split_seed=abc", "data.num_workers=-1", "data.num_workers=abc", "data.download=maybe",
    "data.binarize=bogus", "data.quantize=3", "data.classes=[11]", "data.classes=[]", "data.classes=[5,5]",
    "data.val_size=-0.1", "data.val_size=1.5", "data.val_size=abc", "data.pin_memory=2", "sample.method=bogus",
    "sample.th=2", "sample.th=-0.1", "sample.z_scale=0", "sample.mode=bogus", "sample.temperature=0",
    "sample.batch_size=0", "sample.batch_size=abc", "fid.seed=abc", "fid.enabled=maybe", "fid.n_gen=1", "fid.n_sets=0",
    "fid.real_set=bogus", "fid.batch_size=0", "fid.extra_th=[2]", "fid.knn.k=0", "fid.knn.n=-1", "likelihood.k=0",
    "likelihood.max_images=0", "likelihood.seed=-1", "model.beta=-1", "model.beta=abc", "model.batch_reduction=median",
    "model.optimizer.lr=0", "model.optimizer.lr=-1", "model.optimizer.lr=abc", "model.optimizer.lr=inf",
    "+model.optimizer.momentum=-1", "+model.optimizer.weight_decay=-1", "model.optimizer._target_=torch.optim.Adamm",
    "model.optimizer._target_=bogus", "model.net.geometry=[]", "model.net.first_patch=bogus",
    "model.net._target_=sarnet.nn.Bogus", "model.net=3", "loss.ssim_weight=-1", "loss.kind=bogus",
    "loss.reduction=bogus", "loss._target_=sarnet.losses.Nope", "callbacks.images.every_n_epochs=0",
    "callbacks.images.every_n_epochs=abc", "callbacks.images.n=0", "callbacks.checkpoint.save_top_k=-2",
    "callbacks.checkpoint.save_top_k=abc", "callbacks.checkpoint.mode=bogus",
    "callbacks.checkpoint._target_=lightning.pytorch.callbacks.Bogus", "model.scheduler=3",
    "trainer._target_=lightning.Trainerr", "data._target_=sarnet.data.Bogus",
    "scheduler=plateau model.scheduler._partial_=false", "trainer.precision=bogus", "trainer.fast_dev_run=-1",
    "trainer.overfit_batches=1.5", "trainer.profiler=bogus", "trainer.accumulate_grad_batches=0",
    "trainer.gradient_clip_val=-1", "trainer.max_steps=-2", "trainer.val_check_interval=0", "trainer.num_nodes=0",
    "logger=wandb logger.wandb.log_model=all", "optimized_metric=fid/mean", "optimized_metric=test/nll",
    "optimized_metric=bogus",
]
TRAIN = [  # (kind, overrides, text the one-line refusal must contain)
    *[("field", *e) if isinstance(e, tuple) else ("field", e, e.split()[-1].split("=")[0].lstrip("+") + "=")
      for e in FIELD],
    ("hydra", "bogus=1", "bogus: no such key"), ("hydra", "data.val_siz=0.2", "data.val_siz: no such key"),
    ("hydra", "loss=bogus", "loss=bogus: no such option"), ("hydra", "model=bogus", "model=bogus"),
    ("hydra", "data=bogus", "data=bogus"), ("hydra", "experiment=nope", "experiment=nope"),
    ("hydra", "scheduler=bogus", "scheduler=bogus"), ("hydra", "model.optimizer.lr=[1", "model.optimizer.lr=[1"),
    ("hydra", "+data.val_size=3", "data.val_size"),
    ("cross", "model=sarnet model.net.latent_dim=16", "model.net.latent_dim=16"),
    ("cross", "model=sarnet loss=bce", "loss.kind=bce"),
    ("cross", "model.net.geometry=[[28,1,3],[28,1,3]]", "model.net.geometry"),
    ("cross", "model.net.geometry=[[28,1,4],[14,2,2]]", "model.net.geometry"),
    ("cross", "model.net.geometry=[[8,1,2],[4,3,1],[8,1,2]]", "model.net.geometry"),
    ("cross", "data.quantize=2", "data.quantize"), ("cross", "experiment=cls_sarnet data.quantize=null", "quantize"),
    ("cross", "experiment=cls_sarnet data.binarize=dynamic", "data.binarize"),
    ("cross", "experiment=cls_sarnet loss=l1", "loss"), ("cross", "experiment=cls_sarnet sample.mode=mean", "mode"),
    ("cross", "model=sarnet_bernoulli sample.mode=categorical", "sample.mode"),
    ("cross", "model=sarnet sample.mode=bernoulli", "sample.mode"),
    ("cross", "experiment=cls_sarnet_prob model.net.geometry=[[28,1,4],[28,1,4],[28,2,4],[28,4,4]]", "geometry"),
    ("cross", "experiment=cls_sarnet_prob loss=l1", "loss"),
    ("cross", "likelihood=default", "first_patch"), ("cross", "experiment=nll_vae data.binarize=none", "binarize"),
    ("cross", "data.val_size=0 eval_ckpt=best", "eval_ckpt"), ("cross", "trainer.limit_val_batches=0", "monitor"),
    ("cross", "scheduler=plateau trainer.limit_val_batches=0 callbacks.checkpoint.monitor=train/loss",
     "model.scheduler"), ("cross", "scheduler=plateau model.scheduler.factor=2", "model.scheduler"),
    ("cross", "callbacks.checkpoint.monitor=val/foo", "callbacks.checkpoint.monitor"),
    ("cross", "callbacks.images.keep_patches=100", "keep_patches"),
    ("cross", "+model.optimizer.momentum=0.9", "model.optimizer"), ("cross", "fid.knn.n=3", "fid.knn.n"),
    ("cross", "+data.bogus=1", "data"), ("cross", "data.static_dir=/nonexistent", "data.static_dir"),
    ("cross", "trainer.devices=0", "trainer"), ("cross", "trainer.accelerator=bogus", "trainer"),
    ("cross", "+trainer.bogus=1", "trainer"), ("cross", "init_ckpt={ckpt} ckpt_path={ckpt}", "init_ckpt"),
    ("cross", "latent_dim=16 init_ckpt={ckpt}", "init_ckpt"),
    ("resource", "fid.n_gen=99999999999", "fid.n_gen"), ("resource", "fid.n_sets=1000000", "fid.n_gen x fid.n_sets"),
    ("resource", "fid.batch_size=1000000000", "fid.batch_size"),
    ("resource", "sample.batch_size=1000000000", "sample.batch_size"),
    ("resource", "callbacks.images.n=100000", "callbacks.images.n"),
    ("resource", "likelihood.k=1000000000", "likelihood.k"), ("resource", "fid.knn.n=1000000", "fid.knn.n"),
    ("file", "data_dir=/nonexistent", "data_dir=/nonexistent"), ("file", "ckpt_path=/nonexistent.ckpt", "ckpt_path"),
    ("file", "init_ckpt=/nonexistent.ckpt", "init_ckpt"), ("file", "ckpt_path=last", "ckpt_path='last'"),
    ("file", "ckpt_path=/", "ckpt_path='/'"),
    ("file", "ckpt_path={damaged}", "{damaged}/checkpoints/last.ckpt: cannot be read"),
    ("file", "data_dir={data_deleted}", "missing data file"),
    ("file", "data_dir={data_flipped}", "{data_flipped}/MNIST/raw/t10k-labels-idx1-ubyte: does not match the md5"),
    ("file", "data_dir={data_published}", "{data_published}/MNIST/raw/t10k-labels-idx1-ubyte: does not match the md5"),
    ("file", "data_dir={data_garbage}", "not a readable md5 list"),
]

CLI = [  # (kind, argv of `sarnet`, text of the one-line usage error)
    ("cli", "bogus", "unknown command"), ("cli", "sample --ckpt /nonexistent.ckpt", "no such checkpoint file"),
    ("cli", "sample --ckpt /", "a folder without checkpoints/last.ckpt"), ("cli", "sample --ckpt {ckpt} --n 0", "--n"),
    ("cli", "sample --ckpt {ckpt} --th 2", "--th: 2 is not in [0, 1)"),
    ("cli", "sample --ckpt {ckpt} --mode x", "--mode"),
    ("cli", "complete --ckpt {ckpt} --n 0", "--n"), ("cli", "complete --ckpt {ckpt} --keep 3 --keep-rows 1", "--keep"),
    ("cli", "interpolate --ckpt {ckpt} --steps 0", "--steps"), ("cli", "importance --ckpt {ckpt} --top-k x", "top-k"),
    ("cli", "fid --ckpt /nonexistent.ckpt", "no such checkpoint file"), ("cli", "fid --ckpt {ckpt} --n-gen 1", "n-gen"),
    ("cli", "fid --ckpt {ckpt} --z-scale 0", "z-scale"), ("cli", "fid --ckpt {ckpt} --real-set x", "--real-set"),
    ("cli", "likelihood --ckpt /nonexistent.ckpt", "no such checkpoint file"),
    ("cli", "likelihood --ckpt {ckpt} --k 0", "--k"), ("cli", "table", "dirs"),
    ("cli", "table /nonexistent", "not a dir"),
    ("cli", "calibrate --dataset x", "--dataset"), ("cli", "bench bogus", "unknown case"),
    ("cli", "gpu-check --bogus", "unrecognized"), ("cli", "xgb --rounds 0", "--rounds"),
    ("cli", "xgb --max-patches 500", "--max-patches"), ("cli", "train-classifier --steps 0", "--steps"),
    ("cli", "train-classifier --snapshots 20000 --steps 100", "--snapshots"), ("cli", "data --bogus", "unrecognized"),
]
HELP = ["train", "sample", "complete", "interpolate", "importance", "fid", "likelihood", "table", "calibrate", "bench",
        "gpu-check", "xgb", "train-classifier", "data"]  # `sarnet <command> --help`: before torch too

API = [  # (kind, call on (nets, torch, sarnet.sampling), text of the ValueError): the library's own refusals
    ("api", lambda m, t, s: s.generate(m["vae"], n=0), "n=0: must be a positive int"),
    ("api", lambda m, t, s: s.generate(m["vae"], z=t.zeros(2, 5)), r"z: expected shape \(n, 4\)"),
    ("api", lambda m, t, s: s.generate(m["vae"], n=3, z=t.zeros(2, 4)), "disagree on the number of images"),
    ("api", lambda m, t, s: s.generate(m["vae"], z=t.zeros(2, 4), x=t.zeros(3, 1, 28, 28)), "disagree"),
    ("api", lambda m, t, s: s.generate(m["vae"], z=t.full((2, 4), float("nan"))), "NaN"),
    ("api", lambda m, t, s: s.generate(m["plain"], z=t.zeros(2, 4)), r"z: expected shape"),
    ("api", lambda m, t, s: s.generate(m["vae"], n=2, method="bogus"), "method='bogus'"),
    ("api", lambda m, t, s: s.generate(m["vae"], n=2, batch_size=0), "batch_size=0"),
    ("api", lambda m, t, s: s.generate(m["vae"], n=2, mode="bernoulli", temperature=0), "temperature=0"),
    ("api", lambda m, t, s: s.generate(m["vae"], n=2, th=2.0), r"th=2.0: must be None .* or in \[0, 1\)"),
    ("api", lambda m, t, s: s.generate(m["conv"], n=2, th=-0.5), r"th=-0.5"),
    ("api", lambda m, t, s: s.generate(m["vae"], n=2, th="0.1"), r"th='0.1'"),
    ("api", lambda m, t, s: s.generate(m["regression"], n=2, mode="bernoulli"), "needs a sigmoid output"),
    ("api", lambda m, t, s: s.generate(m["vae"], x=t.zeros(2, 1, 14, 14)), r"x: expected a float tensor"),
    ("api", lambda m, t, s: s.generate(m["vae"], x=t.zeros(2, 1, 28, 28, dtype=t.uint8)), "x: expected a float"),
    ("api", lambda m, t, s: s.fill_fast(m["vae"].decoder, t.zeros(2, 1, 28, 28)), "latent_dim=4: pass z"),
    ("api", lambda m, t, s: s.fill_naive(m["vae"].decoder, t.zeros(2, 1, 28, 28)), "latent_dim=4: pass z"),
    ("api", lambda m, t, s: s.fill_fast(m["plain"], t.zeros(2, 1, 28, 28), mode="bernoulli", uniforms=t.rand(2, 10)),
     r"uniforms: expected a float tensor of shape \(2, 784\)"),
    ("api", lambda m, t, s: s.fill_naive(m["plain"], t.zeros(2, 1, 28, 28), mode="bernoulli",
                                         uniforms=t.rand(784)), r"uniforms: .*\(2, 784\)"),
    ("api", lambda m, t, s: s.fill_fast(m["plain"], t.zeros(2, 1, 28, 28), mode="bernoulli",
                                        uniforms=t.zeros(2, 784, dtype=t.long)), "uniforms"),
    ("api", lambda m, t, s: s.fill_fast(m["plain"], t.zeros(2, 1, 28, 28), th=1.5), "th=1.5"),
    ("api", lambda m, t, s: s.complete(m["vae"], t.zeros(1, 1, 28, 28), 24, n=0), "n=0"),
    ("api", lambda m, t, s: s.complete(m["vae"], t.zeros(1, 28, 28), 24), "x: expected"),
    ("api", lambda m, t, s: s.complete(m["vae"], t.zeros(1, 1, 28, 28), 50), "keep=50"),
    ("api", lambda m, t, s: s.interpolate(m["vae"], t.zeros(1, 1, 28, 28), t.zeros(1, 1, 28, 28), steps=0),
     "steps=0"),
    ("api", lambda m, t, s: s.keep_mask(m["vae"].decoder, t.tensor([2] * 49)), "bool .*mask"),
    ("api", lambda m, t, s: s.sample_images(m["regression"], 2), r"regression.*alpha_max"),
    ("api", lambda m, t, s: s.sample_images(m["regression"], 2, {"regression": {"p": 0.3}}), "alpha_max"),
    ("api", lambda m, t, s: s.sample_images(m["regression"], 0, {"regression": {"alpha_max": 0.6, "p": 0.3,
                                                                               "refine": True}}), "n=0"),
    ("api", lambda m, t, s: s.generate_regression(m["regression"], 2, 0.6, 0.3, th=3, refine=False), "th=3"),
]
