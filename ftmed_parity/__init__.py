"""ftmed's parity suite: layer by layer, evidence that the Lightning port computes what the Keras reference
computes. Each check is a declared object (checks.py) with its tolerance and the reason for it; the
frameworks are reached only through `Sides` (sides.py), which a test replaces to plant a bug.

| module | layers |
|---|---|
| structure.py | 1 architecture, 2 weights, 3 forward |
| loss.py | 4 loss, 5 gradients |
| optimizers.py | 6 update rules, open loop |
| closed_loop.py | 7 training, closed loop |
| statistical.py | 8 outcomes over seeds |
| backends.py | 1-7 for Keras on another backend (JAX, torch), ids `check@backend` |
| suite.py | the layer list, `run_layers`, the generated tolerance table |
| api.py | `run(...)` -> `ParityRun` (results, seconds, environment; writes parity.json/md) |
| probe.py | launches Keras on another backend in a child process |

Both frameworks run in one process, on CPU, float32, one thread each (`sides.setup_frameworks`); Keras on
another backend runs in a child process per layer (`ftmed_parity.probe`), so such a run needs no
TensorFlow (`sides.port_sides`). This
package imports the adapters (lazily: importing it loads no framework) and never the CLI; `ftmed parity`
(cli/parity.py) and `ftmed.parity` call `api.run`; the CLI only renders what it returns.
"""

from ftmed_parity.checks import ERROR, FAIL, INFO, PASS, Check, Measurement, Result, Tolerance, run_checks
from ftmed_parity.suite import DEFAULT_LAYERS, LAYERS, layer_checks, run_layers, tolerance_table

__all__ = ["Check", "DEFAULT_LAYERS", "ERROR", "FAIL", "INFO", "LAYERS", "Measurement", "PASS", "Result",
           "Tolerance", "layer_checks", "run_checks", "run_layers", "tolerance_table"]
