"""ftmed's Python API: train one configuration, compare a grid, load a runs folder -- the same functions
the `ftmed` command calls.

    import ftmed

    ftmed.synthesize("data/synthetic", scale=0.02)                 # or use real PathMNIST (downloaded)
    record = ftmed.train("baseline", framework="keras", epochs=2, data_dir="data/synthetic")
    comparison = ftmed.compare(variants="study", seeds=[0, 1], epochs=2, data_dir="data/synthetic")
    comparison.table                                               # a pandas DataFrame, one row per variant
    comparison.figures()["accuracy_bars"]                          # matplotlib Figures, inline in a notebook
    ftmed.load_runs("runs").runs                                   # one row per run, from the records
    ftmed.parity(layers=(1, 2)).summary()                          # the parity suite's checks, as data

Stable names: `train`, `compare`, `report`, `parity` (-> `ParityRun`), `load_runs`, `variants`, `load_variants`, `load_data`, `synthesize`, `Comparison`,
`ExperimentConfig`, `OptimizerConfig`, `RuntimeConfig`, `RunRecord`, `Variant`, `BASELINE`, `optimizer_config`,
`FtmedError`, `ConfigError`, `DataError`, `RunError`. Importing ftmed imports neither torch nor TensorFlow;
each framework is imported by the function that trains with it.
"""

from ftmed_core import __version__
from ftmed_core.config import ExperimentConfig, OptimizerConfig, RuntimeConfig, optimizer_config
from ftmed_core.errors import ConfigError, DataError, FtmedError, RunError
from ftmed_core.records import RunRecord
from ftmed_core.variants import BASELINE, Variant

from ftmed.api import compare, load_data, load_runs, load_variants, report, synthesize, train, variants
from ftmed.comparison import Comparison
from ftmed.onnx_export import export
from ftmed_parity.api import ParityRun
from ftmed_parity.api import run as parity

__all__ = [
    "train", "compare", "report", "parity", "ParityRun", "load_runs", "variants", "load_variants", "load_data",
    "synthesize", "export", "Comparison",
    "ExperimentConfig", "OptimizerConfig", "RuntimeConfig", "RunRecord", "Variant", "BASELINE",
    "optimizer_config", "FtmedError", "ConfigError", "DataError", "RunError", "__version__",
]
