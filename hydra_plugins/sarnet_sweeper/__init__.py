"""A Hydra sweeper for results tables: the basic grid sweep, minus the duplicate jobs of models that ignore
latent_dim (simple SarNET at five latent sizes is one model trained five times). Used by experiment=fid_table."""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class TableSweeper(BasicSweeper):
    def __init__(self, max_batch_size=None, params=None, latent_free_models=()):
        super().__init__(max_batch_size, params)
        self.latent_free_models = set(latent_free_models)
        self.seen = set()

    def get_job_batch(self):
        jobs = []
        for job in super().get_job_batch():
            overrides = dict(o.split("=", 1) for o in job)
            if overrides.get("model") in self.latent_free_models:
                key = tuple(sorted((k, v) for k, v in overrides.items() if k != "latent_dim"))
                if key in self.seen:
                    continue
                self.seen.add(key)
            jobs.append(job)
        return jobs
