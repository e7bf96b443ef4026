"""Launch tests: the `slurm` marker (a real Slurm, e.g. `scripts/slurm-local.sh start`)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: submits a job to a real Slurm (skipped unless sbatch and sinfo answer)")
