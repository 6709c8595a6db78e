"""The Keras 3 reference: the study's configurations trained as the study trained them (TensorFlow backend
by default; JAX and torch too).

    from ftmed_core.config import ExperimentConfig
    import keras_ref
    record = keras_ref.train(ExperimentConfig(data_dir="DIR", epochs=2))   # runs/keras-<key>/record.json

Modules: `model` (build_mlp, weights in the core's layout, logits), `optimizers` (build_optimizer),
`losses` (make_loss, compile_model), `training` (fit, train), `weights` (neutral weight files).

Importing this package loads keras on KERAS_BACKEND's backend (tensorflow when unset; jax and torch too,
see keras_ref/backend/ and `ftmed_core.frameworks.prepare_keras_backend`), raises ImportError when keras
was already imported with another backend, and quiets TensorFlow's C++ logging (TF_CPP_MIN_LOG_LEVEL=2
unless set). Runs are recorded under the backend's label: keras, keras[jax], keras[torch].

Keras behaviour this package relies on (tests pin the first four):
- `fit(x, y, validation_split=0.2)` validates on the last 20 % of rows, the core's holdout rows.
- `categorical_crossentropy` on a sigmoid output is softmax cross-entropy on the logits (TF backend).
- With the same weights and batch, a `keras_ref` model and the study's recipe take bitwise-identical
  steps; with `shuffle=False` a whole `keras_ref.fit` equals the study's `fit(validation_split=0.2)`.
- `steps_per_execution=16` gives bitwise the same weights as 1.
- `tf.config.experimental.enable_op_determinism()` changes the numbers on CPU; with it and without it,
  runs repeat bitwise on CPU (`benchmarks/keras_speed.py --check-determinism`). It is process-wide and
  one-way.
- On CPU, `relu(NaN)` is 0: a NaN input does not always reach the loss.
"""

from keras_ref import _backend  # noqa: F401  (pins the backend before anything imports keras)
from keras_ref.model import build_mlp, get_weights, logits_model, predict_logits, set_weights
from keras_ref.training import fit, train
from keras_ref.weights import export_weights, import_weights

__all__ = ["build_mlp", "export_weights", "fit", "get_weights", "import_weights", "logits_model",
           "predict_logits", "set_weights", "train"]
