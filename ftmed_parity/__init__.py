"""ftmed's parity suite: layer by layer, evidence that the Lightning port computes what the Keras reference
computes, on every Keras backend. Each check is a declared object (checks.py) with its tolerance and the
reason for it; the frameworks are reached only through `Sides` (sides.py), which a test replaces to plant a
bug.

| module | layers |
|---|---|
| structure.py | 1 architecture, 2 weights, 3 forward |
| loss.py | 4 loss, 5 gradients |
| optimizers.py | 6 update rules, open loop |
| closed_loop.py | 7 training, closed loop |
| statistical.py | 8 outcomes over seeds (TensorFlow) |
| suite.py | the layer list, `run_layers`, the generated tolerance table |
| api.py | `run(...)` -> `ParityRun` (results, seconds, environment; writes parity.json/md) |
| sides.py | `Sides`: the Keras side per backend, the port (lightning_ft) |
| keras_side.py | what the Keras side computes, through keras_ref, as plain values |
| probe.py | a child process with Keras on another backend, serving keras_side's functions |

Every layer builder takes `keras_backend`: the same checks run against Keras on TensorFlow (in this
process, ids as declared) and on JAX or torch (`sides.keras(backend)`: keras_side's functions in a child
process, ids ending in @backend), so such a run needs no TensorFlow (`sides.port_sides`). Both frameworks
in this process run on CPU, float32, one thread each (`sides.setup_frameworks`). This package imports the
adapters (lazily: importing it loads no framework) and never the CLI; `ftmed parity` (cli/parity.py) and
`ftmed.parity` call `api.run`; the CLI only renders what it returns.
"""

from ftmed_parity.checks import ERROR, FAIL, INFO, PASS, Check, Measurement, Result, Tolerance, run_checks
from ftmed_parity.suite import DEFAULT_LAYERS, LAYERS, layer_checks, run_layers, tolerance_table

__all__ = ["Check", "DEFAULT_LAYERS", "ERROR", "FAIL", "INFO", "LAYERS", "Measurement", "PASS", "Result",
           "Tolerance", "layer_checks", "run_checks", "run_layers", "tolerance_table"]
