"""ftmed's framework-neutral core: configs, the variants registry, data and splits, initial weights, batch
order, the loss definition, metrics, statistics and run records -- what both frameworks must share.

Depends on numpy, scipy, scikit-learn and the standard library only (tomli on Python < 3.11): never torch,
tensorflow, keras or typer, and no presentation (tables, plots, rich, pandas: those live in `ftmed.reporting`),
so that both framework adapters and the CLI can share it, and `ftmed --help` stays fast.
"""

__version__ = "0.1.0"
