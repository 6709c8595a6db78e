"""`ftmed train`: parse the options into a config and a runtime, call `ftmed.train`, print a short summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.build import apply_overrides
from cli.options import (
    AcceleratorOpt, DataDirOpt, DatasetOpt, DevicesOpt, EpochsOpt, Framework, HiddenActivation, InitScheme,
    CudaGraphsOpt, LossMode, MlflowOpt, MlflowUriOpt, Optimizer, OutputActivation, PrecisionOpt, RunsDirOpt,
    Semantics, ShuffleOpt, SizeOpt, StepsPerExecutionOpt, StrategyOpt, ThreadsOpt, ValMode, mlflow_target, value,
)


def train(
    framework: Annotated[Framework, typer.Option("--framework", "-f", help="Which implementation trains: lightning, or Keras on a backend: keras (TensorFlow), keras[jax], keras[torch].")],
    variant: Annotated[str, typer.Option("--variant", help="Start from this registry variant (ftmed variants).")] = "baseline",
    optimizer: Annotated[Optional[Optimizer], typer.Option(help="Optimizer (starts from its Keras defaults).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate.")] = None,
    momentum: Annotated[Optional[float], typer.Option(help="Momentum (sgd, rmsprop).")] = None,
    nesterov: Annotated[Optional[bool], typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum (sgd).")] = None,
    beta1: Annotated[Optional[float], typer.Option("--beta1", help="beta_1 (adam family, lion).")] = None,
    beta2: Annotated[Optional[float], typer.Option("--beta2", help="beta_2 (adam family, lion).")] = None,
    epsilon: Annotated[Optional[float], typer.Option(help="epsilon (Keras placement).")] = None,
    rho: Annotated[Optional[float], typer.Option(help="rho (rmsprop, adadelta).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="Decoupled weight decay (Keras).")] = None,
    initial_accumulator: Annotated[Optional[float], typer.Option("--initial-accumulator", help="Adagrad's initial accumulator.")] = None,
    optimizer_semantics: Annotated[Optional[Semantics], typer.Option("--optimizer-semantics", help="keras: Keras's exact update rule; torch: torch.optim's closest built-in.")] = None,
    hidden: Annotated[Optional[str], typer.Option("--hidden", help="Hidden layer widths, e.g. 512,256,128.")] = None,
    hidden_activation: Annotated[Optional[HiddenActivation], typer.Option("--hidden-activation")] = None,
    output_activation: Annotated[Optional[OutputActivation], typer.Option("--output-activation")] = None,
    loss: Annotated[Optional[LossMode], typer.Option("--loss", help="keras: what Keras computes; probability: the literal -log p.")] = None,
    epochs: EpochsOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    val_mode: Annotated[Optional[ValMode], typer.Option("--val-mode", help="holdout: Keras validation_split=0.2; official: MedMNIST's val split.")] = None,
    init: Annotated[Optional[InitScheme], typer.Option("--init", help="Initial weights scheme.")] = None,
    shuffle: ShuffleOpt = None,
    dataset: DatasetOpt = None,
    size: SizeOpt = None,
    data_dir: DataDirOpt = None,
    accelerator: AcceleratorOpt = "auto",
    devices: DevicesOpt = 1,
    strategy: StrategyOpt = "auto",
    precision: PrecisionOpt = "32",
    threads: ThreadsOpt = 0,
    steps_per_execution: StepsPerExecutionOpt = 0,
    cuda_graphs: CudaGraphsOpt = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log to TensorBoard in the run directory.")] = False,
    mlflow: MlflowOpt = False,
    mlflow_uri: MlflowUriOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    force: Annotated[bool, typer.Option("--force", help="Retrain even if this exact run finished (the old one is kept aside).")] = False,
) -> None:
    """Train one configuration and print test accuracy, AUC, loss, training time and the run directory."""
    import ftmed
    from ftmed_core.config import RuntimeConfig
    from ftmed_core.variants import get_variant

    config = apply_overrides(
        get_variant(variant).config, dataset=dataset, size=size, data_dir=data_dir, epochs=epochs, seed=seed,
        batch_size=batch_size, hidden=hidden, hidden_activation=value(hidden_activation),
        output_activation=value(output_activation), loss=value(loss), val_mode=value(val_mode), init=value(init),
        shuffle=value(shuffle), optimizer=value(optimizer), learning_rate=lr, momentum=momentum, nesterov=nesterov,
        beta_1=beta1, beta_2=beta2, epsilon=epsilon, rho=rho, weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator, semantics=value(optimizer_semantics),
    )
    runtime = RuntimeConfig(accelerator=value(accelerator), devices=devices, strategy=strategy,
                            precision=value(precision), threads=threads, tensorboard=tensorboard,
                            steps_per_execution=steps_per_execution, cuda_graphs=cuda_graphs)
    # Loaded here, not inside ftmed.train, because the start line names the data (synthetic or not).
    data = ftmed.load_data(config.data_dir, config.dataset, config.size, config.val_mode, config.val_fraction)
    fw = value(framework)

    def on_start(config) -> None:  # after every check: an invalid request prints only its error line
        typer.echo(f"training {config.name} with {fw} on {data.label}: {config.optimizer.describe()}, "
                   f"hidden {'-'.join(map(str, config.hidden_units))}, {config.epochs} epoch(s), seed {config.seed}, "
                   f"shuffle {config.shuffle}")

    def on_epoch(epoch: int, total: int, values: dict) -> None:
        typer.echo(f"  epoch {epoch}/{total}: loss {values['train_loss']:.4f} acc {values['train_acc']:.4f} "
                   f"val_loss {values['val_loss']:.4f} val_acc {values['val_acc']:.4f} "
                   f"({values['epoch_seconds']:.1f} s)")

    started = time.time()
    record = ftmed.train(config, framework=fw, runtime=runtime, runs_dir=runs_dir, data=data, force=force,
                         on_epoch=on_epoch, on_start=on_start, mlflow=mlflow_target(mlflow, mlflow_uri))
    run_dir = runs_dir / record.run_key
    if record.started_at is not None and record.started_at < started:
        typer.echo("reused a finished identical run (pass --force to retrain)")
    if not record.finished:
        typer.echo(f"run FAILED: {record.error}", err=True)
        typer.echo(f"record: {run_dir}", err=True)
        raise typer.Exit(1)
    t = record.test
    typer.echo(f"test accuracy {100 * t['accuracy']:.2f} %  AUC {t['auc']:.4f}  loss {t['loss']:.4f}  "
               f"training {record.training_seconds:.1f} s  run {run_dir}")
