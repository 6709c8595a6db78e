"""Keras's counterpart of Lightning's `MLFlowLogger`: one MLflow run per training, through the mlflow client.

It logs what `lightning_ft` logs (ftmed_core.tracking): the flat parameters, and per epoch the shared
history keys plus `epoch`, at step = the epoch's last optimizer step, 0-based (Lightning's step). The run
is marked FINISHED when training ends; `ftmed.tracking.finish_run` adds the test metrics and artifacts.
"""

from __future__ import annotations

from ftmed_core import tracking
from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.records import HISTORY_KEYS
from keras_ref._backend import keras


class MLflowCallback(keras.callbacks.Callback):
    """Logs to MLflow at `runtime.mlflow`; reads each epoch's values from `history` (EpochReport's, which
    must come earlier in the callback list) so both frameworks log the same numbers under the same names."""

    def __init__(self, config: ExperimentConfig, runtime: RuntimeConfig, history: dict, steps_per_epoch: int):
        super().__init__()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=runtime.mlflow)
        experiment = self.client.get_experiment_by_name(tracking.EXPERIMENT)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(tracking.EXPERIMENT,
                                                            tracking.artifact_location(runtime.mlflow)))
        run = self.client.create_run(experiment_id, run_name=tracking.run_name("keras", config),
                                     tags=tracking.tags("keras", config))
        self.run_id = run.info.run_id
        self.history, self.steps_per_epoch = history, steps_per_epoch
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in
                                                   tracking.params("keras", config, runtime).items()])

    def on_epoch_end(self, epoch, logs=None):
        import time

        from mlflow.entities import Metric

        step = (epoch + 1) * self.steps_per_epoch - 1  # Lightning's: the epoch's last step, 0-based
        now = int(time.time() * 1000)
        values = {key: self.history[key][-1] for key in HISTORY_KEYS if self.history[key]}
        values["epoch"] = float(epoch)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def on_train_end(self, logs=None):
        self.client.set_terminated(self.run_id, "FINISHED")
