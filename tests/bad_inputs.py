"""The project's table of bad inputs a careless user could type or leave lying around, and the field or file the
one-line refusal must name (run by tests/test_bad_inputs.py). Kinds, and what "before work" means for each:
- field:    one field's type or range (train.py overrides): before torch is imported
- hydra:    an override Hydra cannot compose (unknown key, group option; bad syntax): before torch, exit 2
- cli:      a command's usage error (argv of `sarnet`): before torch, exit 2
- cross:    fields that do not go together, or an object that does not build: before any data is read
- resource: a value beyond a stated cap (time, memory): before the work that would hit it
- file:     a data file, checkpoint or FID weights file missing or damaged: before any training step
{ckpt}, {damaged}, {data_*} stand for files the test makes (a small checkpoint, a truncated one, data dirs).
"""

# field: one field's type or range, refused in a line naming it, "<key>=<value> is invalid: ...": the text the
# line must contain is "<key>=" of the last override, or a tuple's (overrides, text).
FIELD = [
    ("seed=-1", "seed=-1"), "seed=4294967296", "seed=abc", "seed=1.5", "latent_dim=0", "latent_dim=1.5",
    "latent_dim=true", ("latent_dim=abc", "latent_dim='abc'"), "run_test=maybe", "resume_override_optimizer=yes",
    "eval_ckpt=final", "data_dir=", "trainer.max_epochs=0", "trainer.check_val_every_n_epoch=0",
    "trainer.limit_train_batches=0", "trainer.limit_val_batches=2.5", "trainer.limit_test_batches=-1",
    "trainer.log_every_n_steps=0", "trainer.enable_progress_bar=maybe", "data.batch_size=0", "data.split_seed=abc",
    "data.num_workers=-1", "data.download=maybe", "data.binarize=bogus", "data.quantize=3", "data.classes=[11]",
    "data.classes=[]", "data.classes=[5,5]", "data.val_size=-0.1", "data.val_size=1.5", "data.val_size=abc",
    "data.pin_memory=2", "sample.method=bogus", "sample.th=2", "sample.th=-0.1", "sample.z_scale=0",
    "sample.mode=bogus", "sample.temperature=0", "sample.batch_size=0", "fid.seed=abc", "fid.enabled=maybe",
    "fid.n_gen=1", "fid.n_sets=0", "fid.real_set=bogus", "fid.batch_size=0", "fid.extra_th=[2]", "fid.knn.k=0",
    "fid.knn.n=-1", "likelihood.k=0", "likelihood.max_images=0", "likelihood.seed=-1", "model.beta=-1",
    "model.batch_reduction=median", "model.optimizer.lr=0", "model.optimizer.lr=abc", "model.optimizer.lr=inf",
    "+model.optimizer.momentum=-1", "+model.optimizer.weight_decay=-1", "model.optimizer._target_=torch.optim.Adamm",
    "model.optimizer._target_=bogus", "model.net.geometry=[]", "model.net.first_patch=bogus",
    "model.net._target_=sarnet.nn.Bogus", "model.net=3", "loss.ssim_weight=-1", "loss.kind=bogus",
    "loss.reduction=bogus", "loss._target_=sarnet.losses.Nope", "callbacks.images.every_n_epochs=0",
    "callbacks.images.n=0", "callbacks.checkpoint.save_top_k=-2", "callbacks.checkpoint.mode=bogus",
    "callbacks.checkpoint._target_=lightning.pytorch.callbacks.Bogus", "model.scheduler=3",
    "trainer._target_=lightning.Trainerr", "data._target_=sarnet.data.Bogus",
    "scheduler=plateau model.scheduler._partial_=false", "trainer.precision=bogus", "trainer.fast_dev_run=-1",
    "trainer.overfit_batches=1.5", "trainer.profiler=bogus", "trainer.accumulate_grad_batches=0",
    "trainer.gradient_clip_val=-1", "trainer.max_steps=-2", "trainer.val_check_interval=0", "trainer.num_nodes=0",
    "logger=wandb logger.wandb.log_model=all", "optimized_metric=fid/mean", "optimized_metric=test/nll",
    "optimized_metric=bogus", "sample.batch_size=abc",
]
TRAIN = [  # (kind, overrides added to conftest.QUICK, text the one-line refusal must contain)
    *[("field", *e) if isinstance(e, tuple) else ("field", e, e.split()[-1].split("=")[0].lstrip("+") + "=")
      for e in FIELD],
    *[(kind, o, e) for kind, entries in {
        "hydra": [
            ("bogus=1", "bogus: no such key"), ("data.val_siz=0.2", "data.val_siz: no such key"),
            ("loss=bogus", "loss=bogus: no such option"), ("model=bogus", "model=bogus"), ("data=bogus", "data=bogus"),
            ("experiment=nope", "experiment=nope"), ("scheduler=bogus", "scheduler=bogus"),
            ("model.optimizer.lr=[1", "model.optimizer.lr=[1"), ("+data.val_size=3", "data.val_size"),
        ],
        "cross": [
            ("model=sarnet model.net.latent_dim=16", "model.net.latent_dim=16"),
            ("model=sarnet loss=bce", "loss.kind=bce"),
            ("model.net.geometry=[[28,1,3],[28,1,3]]", "model.net.geometry"),
            ("model.net.geometry=[[28,1,4],[14,2,2]]", "model.net.geometry"),
            ("model.net.geometry=[[8,1,2],[4,3,1],[8,1,2]]", "model.net.geometry"),
            ("data.quantize=2", "data.quantize"), ("experiment=cls_sarnet data.quantize=null", "quantize"),
            ("experiment=cls_sarnet data.binarize=dynamic", "data.binarize"), ("experiment=cls_sarnet loss=l1", "loss"),
            ("experiment=cls_sarnet sample.mode=mean", "mode"),
            ("model=sarnet_bernoulli sample.mode=categorical", "sample.mode"),
            ("model=sarnet sample.mode=bernoulli", "sample.mode"),
            ("experiment=cls_sarnet_prob model.net.geometry=[[28,1,4],[28,1,4],[28,2,4],[28,4,4]]", "geometry"),
            ("experiment=cls_sarnet_prob loss=l1", "loss"), ("likelihood=default", "first_patch"),
            ("experiment=nll_vae data.binarize=none", "binarize"), ("data.val_size=0 eval_ckpt=best", "eval_ckpt"),
            ("trainer.limit_val_batches=0", "monitor"),
            ("scheduler=plateau trainer.limit_val_batches=0 callbacks.checkpoint.monitor=train/loss",
             "model.scheduler"),
            ("scheduler=plateau model.scheduler.factor=2", "model.scheduler"),
            ("callbacks.checkpoint.monitor=val/foo", "callbacks.checkpoint.monitor"),
            ("callbacks.images.keep_patches=100", "keep_patches"), ("+model.optimizer.momentum=0.9", "model.optimizer"),
            ("fid.knn.n=3", "fid.knn.n"), ("+data.bogus=1", "data"),
            ("data.static_dir=/nonexistent", "data.static_dir"), ("trainer.devices=0", "trainer"),
            ("trainer.accelerator=bogus", "trainer"), ("+trainer.bogus=1", "trainer"),
            ("init_ckpt={ckpt} ckpt_path={ckpt}", "init_ckpt='{ckpt}' is invalid: cannot go with ckpt_path={ckpt}: "
             "ckpt_path resumes a run in its own run dir, init_ckpt starts a new run from a checkpoint's weights; "
             "give one of them"), ("latent_dim=16 init_ckpt={ckpt}", "init_ckpt"),
        ],
        "resource": [
            ("fid.n_gen=99999999999", "fid.n_gen"), ("fid.n_sets=1000000", "fid.n_gen x fid.n_sets"),
            ("fid.batch_size=1000000000", "fid.batch_size"), ("sample.batch_size=1000000000", "sample.batch_size"),
            ("callbacks.images.n=100000", "callbacks.images.n"), ("likelihood.k=1000000000", "likelihood.k"),
            ("fid.knn.n=1000000", "fid.knn.n"),
        ],
        "file": [
            ("data_dir=/nonexistent", "data_dir=/nonexistent"), ("ckpt_path=/nonexistent.ckpt", "ckpt_path"),
            ("init_ckpt=/nonexistent.ckpt", "init_ckpt"), ("ckpt_path=last", "ckpt_path='last'"),
            ("ckpt_path=/", "ckpt_path='/' is invalid: is not a checkpoint file: give an existing .ckpt, or a run dir "
                            "holding checkpoints/last.ckpt"),
            ("ckpt_path={damaged}", "{damaged}/checkpoints/last.ckpt: cannot be read"),
            ("data_dir={data_deleted}", "missing data file"),
            ("data_dir={data_flipped}", "{data_flipped}/MNIST/raw/t10k-labels-idx1-ubyte: does not match the md5"),
            ("data_dir={data_published}", "{data_published}/MNIST/raw/t10k-labels-idx1-ubyte: does not match the md5"),
            ("data_dir={data_garbage}", "not a readable md5 list"),
        ],
    }.items() for o, e in entries],
]

CLI = [  # (argv of `sarnet`, text of the one-line usage error)
    ("bogus", "unknown command"), ("sample --ckpt /nonexistent.ckpt", "no such checkpoint file"),
    ("sample --ckpt /", "a folder without checkpoints/last.ckpt"), ("sample --ckpt {ckpt} --n 0", "--n"),
    ("sample --ckpt {ckpt} --n 1025", "--n: 1025 must be in [1, 1024]"), ("sample --ckpt {ckpt} --scale 17", "17"),
    ("sample --ckpt {ckpt} --th 2", "--th: 2 is not in [0, 1)"), ("sample --ckpt {ckpt} --mode x", "--mode"),
    ("complete --ckpt {ckpt} --n 2000", "--n: 2000"), ("complete --ckpt {ckpt} --keep 3 --keep-rows 1", "--keep"),
    ("interpolate --ckpt {ckpt} --steps 2000", "--steps: 2000"), ("importance --ckpt {ckpt} --top-k x", "top-k"),
    ("fid --ckpt /nonexistent.ckpt", "no such checkpoint file"), ("fid --ckpt {ckpt} --n-gen 1", "n-gen"),
    ("fid --ckpt {ckpt} --z-scale 0", "z-scale"), ("fid --ckpt {ckpt} --real-set x", "--real-set"),
    ("likelihood --ckpt /nonexistent.ckpt", "no such checkpoint file"), ("likelihood --ckpt {ckpt} --k 0", "--k"),
    ("likelihood --ckpt {ckpt} --k 200000", "--k: 200000"), ("table", "dirs"), ("table /nonexistent", "not a dir"),
    ("calibrate --dataset x", "--dataset"), ("bench bogus", "unknown case"), ("gpu-check --bogus", "unrecognized"),
    ("xgb --rounds 0", "--rounds"), ("xgb --max-patches 500", "--max-patches"),
    ("train-classifier --steps 0", "--steps"), ("train-classifier --snapshots 20000 --steps 100", "--snapshots"),
    ("data --bogus", "unrecognized"), ("data --root {ckpt}/x", "x: cannot write"),
]
HELP = ["train", "sample", "complete", "interpolate", "importance", "fid", "likelihood", "table", "calibrate", "bench",
        "gpu-check", "xgb", "train-classifier", "data"]  # `sarnet <command> --help`: before torch too

# api: a library call (on vae: SarNET-VAE, L=4; plain: sigmoid SarNet; conv: conv VAE, L=4; regression: SarNet of
# out_activation none; strict and strict_vae: plain and vae with first_patch=predicted) refused by one exception of its
# kind naming the argument, in one line: never a raw IndexError, TypeError or silently wrong images. (exception, call,
# what its message must match)
API = [(error, call, match) for error, calls in {
    "ValueError": [
        ("generate(vae, n=0)", "n=0: must be a positive int"),
        ("generate(vae, z=torch.zeros(2, 5))", r"z: expected shape \(n, 4\)"),
        ("generate(vae, n=3, z=torch.zeros(2, 4))", "disagree on the number of images"),
        ("generate(vae, z=torch.zeros(2, 4), x=torch.zeros(3, 1, 28, 28))", "disagree"),
        ("generate(vae, z=torch.full((2, 4), float('nan')))", "NaN"), ("generate(plain, z=torch.zeros(2, 4))",
                                                                        r"z: expected shape"),
        ("generate(vae, n=2, method='bogus')", "method='bogus'"), ("generate(vae, n=2, batch_size=0)", "batch_size=0"),
        ("generate(vae, n=2, mode='bernoulli', temperature=0)", "temperature=0"),
        ("generate(vae, n=2, th=2.0)", r"th=2.0: must be None .* or in \[0, 1\)"),
        ("generate(conv, n=2, th=-0.5)", r"th=-0.5"), ("generate(vae, n=2, th='0.1')", r"th='0.1'"),
        ("generate(regression, n=2, mode='bernoulli')", "needs a sigmoid output"),
        ("generate(vae, x=torch.zeros(2, 1, 14, 14))", r"x: expected a float tensor"),
        ("generate(vae, x=torch.zeros(2, 1, 28, 28, dtype=torch.uint8))", "x: expected a float"),
        ("generate(make_net('cls-pixel-c2', 'given'), 2, mode='mean')", "mode='categorical' is for softmax"),
        ("generate(make_net('cls-pixel-c2', 'given'), 2, mode='bernoulli')", "mode='categorical' is for softmax"),
        ("generate(SarNet([[6, 1, 1], [6, 2, 1], [6, 1, 1]], out_activation='sigmoid'), 2, mode='categorical')",
         "mode='categorical' is for softmax"),
        ("generate(SarNetVAE(8), 4, dtype='float16')", r"dtype='float16': must be one of \['float32', 'bfloat16'\]"),
        ("fill_fast(vae.decoder, torch.zeros(2, 1, 28, 28))", "latent_dim=4: pass z"),
        ("fill_naive(vae.decoder, torch.zeros(2, 1, 28, 28))", "latent_dim=4: pass z"),
        ("fill_fast(plain, torch.zeros(2, 1, 28, 28), mode='bernoulli', uniforms=torch.rand(2, 10))",
         r"uniforms: expected a float tensor of shape \(2, 784\)"),
        ("fill_naive(plain, torch.zeros(2, 1, 28, 28), mode='bernoulli', uniforms=torch.rand(784))",
         r"uniforms: .*\(2, 784\)"),
        ("fill_fast(plain, torch.zeros(2, 1, 28, 28), mode='bernoulli', uniforms=torch.zeros(2, 784).long())",
         "uniforms"), ("fill_fast(plain, torch.zeros(2, 1, 28, 28), th=1.5)", "th=1.5"),
        ("complete(vae, torch.zeros(1, 1, 28, 28), 24, n=0)", "n=0"),
        ("complete(vae, torch.zeros(1, 28, 28), 24)", "x: expected"),
        ("complete(vae, torch.zeros(1, 1, 28, 28), 50)", "keep=50"),
        ("interpolate(vae, torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 28, 28), steps=0)", "steps=0"),
        ("keep_mask(vae.decoder, torch.tensor([2] * 49))", "bool .*mask"),
        ("sample_images(regression, 2)", r"regression.*alpha_max"),
        ("sample_images(regression, 2, {'regression': {'p': 0.3}})", "alpha_max"),
        ("sample_images(regression, 0, {'regression': {'alpha_max': 0.6, 'p': 0.3, 'refine': True}})", "n=0"),
        ("generate_regression(regression, 2, 0.6, 0.3, th=3, refine=False)", "th=3"),
        ("generate_regression(SarNet(latent_dim=4), 2, 0.65, 0.3, 0.15, True)", "no latent"),
        ("generate_regression(regression, 2, 0.65, 0.3, 0.15, True, method='bogus')", "method="),
        ("SarnetModule(make_net('cls-c4', 'given'), ReconstructionLoss('power'), None)", "loss=ce"),
        ("SarnetModule(SarNet(out_activation='sigmoid'), CrossEntropyLoss(), None)", "loss=ce"),
        ("strict_vae.decoder.logits(torch.rand(2, 1, 28, 28), torch.rand(7, 4))", "z has 7 rows for 2 inputs: must"),
        ("FIDEvaluator(None, torch.rand(4, 1, 28, 28), 'test', 2, 0, 0)", "n_sets=0 must be an int >= 1"),
        ("FIDEvaluator(None, torch.rand(4, 1, 28, 28), 'test', 2, 1, 0, dtype='half')", "dtype='half'"),
        ("FIDEvaluator.from_dataset('mnist', [12], 'test', root='/nope')", r"classes=\[12\] must be None \(all\)"),
        ("CrossEntropyLoss()(torch.randn(3, 4, 28, 28), None, torch.zeros(3, 1, 28, 28))", "data.quantize"),
        ("ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))", "at least 11x11"),
        ("knn_accuracy(torch.rand(10, 1, 28, 28), torch.rand(10, 1, 28, 28), k=0)", "k=0"),
    ],
    "LikelihoodError": [
        ("exact_log_prob(plain, torch.zeros(2, 1, 28, 28))",
         r"first_patch='given'.*patch 0 is copied.*first_patch=predicted"),
        ("score(plain, torch.zeros(2, 1, 28, 28))", "first_patch='given'"),
        ("score(vae, torch.zeros(2, 1, 28, 28))", "first_patch='given'"),
        ("score(SarNet(first_patch='predicted'), torch.zeros(2, 1, 28, 28))", "out_activation='none'"),
        ("score(strict, torch.full((3, 1, 28, 28), 0.5))", "not binary.*data.binarize=dynamic"),
        ("score(conv, torch.zeros(3, 1, 28, 28), k=0)", "likelihood.k=0"),
        ("score(strict, torch.zeros(2, 1, 28, 28), refine_steps=5)", "SarNET's NLL is exact"),
        *[(f"score(strict_vae, torch.zeros(2, 1, 28, 28), k=2, refine_steps={steps!r})", "refine_steps=.* is invalid")
          for steps in (-1, 2.5, True)],
        ("score(strict_vae, torch.zeros(2, 1, 28, 28), k=2, refine_steps=1, refine_lr=0)", "refine_lr=0 is invalid"),
    ],
    "TypeError": [("patch_importance(conv, torch.rand(1, 28, 28), 3)", "not autoregressive"),
                  ("SarnetModule(torch.nn.Linear(2, 2), ReconstructionLoss(), None)", "net=Linear lacks config"),
                  ("SarnetModule(type('N', (SarNet,), {})(), ReconstructionLoss(), None)", "its config .* does not")],
    "GeometryError": [
        ("SemiDense(28, 1, 3, 14, 2, 2)", "patch_in=3 does not divide side_in=28"),
        ("SemiDense(28, 1, 4, 14, 2, 1)", "input has 49 patches"),
        ("SemiDense(28, 1, 4, 14, 2, 5)", "patch_out=5 does not divide side_out=14"),
        ("SemiDense(28, 0, 4, 14, 2, 2)", "channels_in=0 must be a positive int"),
        ("SarNet(first_patch='first')", "first_patch='first' is not one of"),
        ("SarNetVAE(0)", "latent_dim=0 must be a positive int"),
        ("SarNet([[28, 1, 4], [14, 2, 2]])", "same side and channels"),
        ("SarNet(out_activation='tanh')", "out_activation='tanh'"),
        ("SarNet([[6, 1, 1], [6, 2, 1], [6, 1, 1]], out_activation='softmax')", "softmax"),  # one channel in and out
    ],
    "DataError": [
        ("MNISTDataModule('/nonexistent', binarize='yes')", "binarize='yes'"),
        ("MNISTDataModule('/nonexistent', val_size=1.5)", "val_size=1.5"),
        ("MNISTDataModule('/nonexistent', val_size=-1)", "val_size=-1"),
        ("MNISTDataModule('/nonexistent', val_size='10')", "val_size='10'"),
        *[(f"MNISTDataModule('/nonexistent', quantize={q!r})", "data.quantize") for q in (3, True, "2")],
        ("MNISTDataModule('/nonexistent', quantize=2, binarize='dynamic')", "data.binarize=none"),
        ("MNISTDataModule('/nope', binarize='static', static_dir='/nope')", "data.static_dir='/nope' does not exist"),
        ("MNISTDataModule('/nope', binarize='dynamic', static_dir='/')", "data.binarize=static and data.classes=null"),
        ("MNISTDataModule('/nonexistent', classes=[5], binarize='static', static_dir='/')", "data.classes=null"),
        ("FashionMNISTDataModule('/nonexistent').setup()", "missing data file .*FashionMNIST.*make data"),
    ],
    "ConfigError": [(f"validate(compose_config('{field}=fp8'))", rf"{field}='fp8' is invalid")
                    for field in ("sample.dtype", "fid.dtype")],
}.items() for call, match in calls]
