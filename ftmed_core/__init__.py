"""ftmed's framework-neutral core: configs, the variants registry, data and splits, initial weights, batch
order, the loss definition, metrics, run records and comparison tables.

Imports numpy and the standard library only -- never torch, tensorflow or typer -- so that both framework
adapters and the CLI can share it, and `ftmed --help` stays fast.
"""

__version__ = "0.1.0"
