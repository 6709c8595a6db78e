"""The block path (lightning_ft/fast.py): K optimizer steps per Lightning training_step must give the
plain path's numbers bit for bit on CPU, keep the core's batch order, run no host synchronisation inside a
block, and keep checkpoints, resume, loggers and the per-epoch callback working. The CUDA-graph tests run
only where CUDA is available."""

from __future__ import annotations

import lightning_ft  # noqa: F401  first: its import guard must run before lightning/triton load

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import lightning.pytorch as L
from ftmed_core.config import ExperimentConfig, RuntimeConfig, optimizer_config
from ftmed_core.data import Split, load_experiment_data, preprocess_images
from ftmed_core.errors import ConfigError
from ftmed_core.protocol import batch_bounds, epoch_permutation, initial_weights
from ftmed_core.variants import get_variant
from lightning_ft.datamodule import DeviceSplit, EpochBatches
from lightning_ft.fast import (
    AUTO_STEPS_CUDA, Block, BlockBatches, BlockRunner, FastDataModule, FastMLPSystem, as_features, capturable,
    describe, epoch_blocks, plan_fast_path,
)
from lightning_ft.model import build_mlp
from lightning_ft.optimizers import build_optimizer
from lightning_ft.training import fit

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device (torch.cuda.is_available() is False)")


def runtime(steps: int, **changes) -> RuntimeConfig:
    return RuntimeConfig(accelerator="cpu", threads=1, progress=False, steps_per_execution=steps, **changes)


@pytest.fixture(scope="module")
def data(synth_dir):
    return load_experiment_data(ExperimentConfig(data_dir=str(synth_dir)))


def run(config, data, rt, run_dir: Path, on_epoch=None):
    weights = initial_weights(config, data.input_dim, data.n_classes)
    result = fit(config, rt, data, weights, run_dir, on_epoch=on_epoch)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return result, state


def assert_same_run(a, b) -> None:
    (ra, sa), (rb, sb) = a, b
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert ra.history[key] == rb.history[key], key
    assert np.array_equal(ra.test_logits, rb.test_logits)
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for key in sa["state_dict"]:
        assert torch.equal(sa["state_dict"][key], sb["state_dict"][key]), key
    oa, ob = sa["optimizer_states"][0], sb["optimizer_states"][0]
    assert oa["param_groups"][0].get("step") == ob["param_groups"][0].get("step")
    for index, state in oa["state"].items():
        for name, tensor in state.items():
            assert torch.equal(tensor, ob["state"][index][name]), (index, name)
    assert sa["global_step"] == sb["global_step"]


# -- batch order ----------------------------------------------------------------------------------------

def test_blocks_cover_every_batch_of_the_core_order_once():
    assert epoch_blocks(23, 5, 3) == [(0, 3, 5), (15, 1, 5), (20, 1, 3)]
    assert epoch_blocks(20, 5, 2) == [(0, 2, 5), (10, 2, 5)]  # no partial batch
    assert epoch_blocks(4, 5, 8) == [(0, 1, 4)]  # only a partial batch
    x = torch.arange(23, dtype=torch.float32).view(-1, 1)
    y = torch.arange(23)
    blocks = list(BlockBatches(x, y, 5, seed=3, shuffle=True, epoch_fn=lambda: 2, steps=3))
    perm = epoch_permutation(3, 2, 23, True)
    assert np.array_equal(blocks[0].perm.numpy(), perm)
    rows = [blocks[0].perm[b.first_row + i * b.batch_size: b.first_row + (i + 1) * b.batch_size]
            for b in blocks for i in range(b.n_steps)]
    plain = list(EpochBatches(DeviceSplit(x, y), 5, seed=3, shuffle=True, epoch_fn=lambda: 2))
    assert [len(r) for r in rows] == [stop - start for start, stop in batch_bounds(23, 5)]
    assert all(torch.equal(r, b[1]) for r, b in zip(rows, plain))
    assert [b.step_in_epoch for b in blocks] == [0, 3, 4] and blocks[-1].epoch_steps == 5
    assert [b.full for b in blocks] == [True, True, False]


def test_uint8_rows_convert_exactly_as_the_core_does():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 4, 4, 3), dtype=np.uint8)
    assert torch.equal(as_features(torch.from_numpy(images)), torch.from_numpy(preprocess_images(images)))
    floats = torch.from_numpy(preprocess_images(images))
    assert as_features(floats) is floats


class CudaScalarDivision(TorchFunctionMode):
    """Emulates CUDA's division of a tensor by a host (Python) number: a multiply by the float32
    reciprocal, which rounds differently from true division for 126 of the 256 uint8 values. A division by
    a tensor keeps true division (on CUDA a 0-dim tensor on the device takes the true-division kernel)."""

    def __init__(self):
        super().__init__()
        self.host_scalar_divisions = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        names = {"div", "div_", "true_divide", "__truediv__", "__itruediv__"}
        if getattr(func, "__name__", "") in names and len(args) == 2 and isinstance(args[1], (int, float)) \
                and torch.is_tensor(args[0]) and args[0].is_floating_point() and not kwargs.get("rounding_mode"):
            self.host_scalar_divisions += 1
            reciprocal = torch.tensor(1.0 / args[1], dtype=torch.float32).to(args[0].dtype)
            if func.__name__ in ("div_", "__itruediv__"):
                return args[0].mul_(reciprocal)
            return args[0] * reciprocal
        return func(*args, **kwargs)


def test_uint8_conversion_is_true_division_even_where_cuda_rounds_host_scalars():
    """The fast path's conversion must not divide by a Python number: on CUDA that is a multiply by the
    reciprocal (1 ulp off for about half of the uint8 values), so the fast and the plain path would see
    different inputs on a GPU. Under the emulation every uint8 value still converts exactly as the core."""
    every = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    expected = torch.from_numpy(preprocess_images(every))
    emulation = CudaScalarDivision()
    with emulation:
        converted = as_features(torch.from_numpy(every))
        naive = torch.from_numpy(every).reshape(4, -1).float() / 255  # what the emulation must catch
    assert emulation.host_scalar_divisions == 1  # only the naive line divided by a host number
    assert not torch.equal(naive, expected)
    assert int((naive != expected).sum()) == 126
    assert converted.numpy().tobytes() == expected.numpy().tobytes()


def test_a_uint8_split_trains_exactly_like_the_preprocessed_float_split(synth_dir, data):
    """The block's input is "the split + the epoch's permutation": a uint8 image split, converted per
    batch, gives the weights the core's float32 split gives, bit for bit."""
    from ftmed_core.data import load_npz

    raw = load_npz(Path(synth_dir) / "pathmnist.npz", "pathmnist", 28)
    images = torch.from_numpy(raw.images["train"][: len(data.y_train)])  # holdout: the first rows train
    config = ExperimentConfig(data_dir=str(synth_dir))
    y = torch.from_numpy(data.y_train)
    weights = []
    for x in (torch.from_numpy(data.x_train), images):
        model = build_mlp(config, data.input_dim, data.n_classes)
        runner = BlockRunner(model, build_optimizer(model.parameters(), config.optimizer), config,
                             torch.device("cpu"), graphs=False)
        for block in BlockBatches(x, y, config.batch_size, 0, True, lambda: 0, 6):
            runner.run(block)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert images.dtype == torch.uint8 and images.dim() == 4
    assert all(torch.equal(a, b) for a, b in zip(*weights))


# -- the same numbers as the plain path -----------------------------------------------------------------

@pytest.mark.parametrize("variant, optimizer", [
    ("baseline", None),  # Keras-exact Adam through the device alpha table
    ("sgd-momentum", None),
    ("wider-deeper", None),
    ("baseline", "nadam"),  # not capturable (host-side step scalars): blocks run the plain step() eagerly
    ("baseline", "adamw"),
])
def test_block_path_equals_plain_path_bitwise(synth_dir, data, tmp_path, variant, optimizer):
    config = replace(get_variant(variant).config, data_dir=str(synth_dir), epochs=2)
    if optimizer is not None:
        config = replace(config, optimizer=optimizer_config(optimizer))
    plain = run(config, data, runtime(1), tmp_path / "plain")
    # 5 steps per block: 16 full batches = 3 blocks of 5 + a block of 1, then the partial batch of 112 rows.
    blocks = run(config, data, runtime(5), tmp_path / "blocks")
    assert plain[0].environment["training_path"].startswith("plain")
    assert blocks[0].environment["training_path"] == "blocks of 5 steps"
    assert_same_run(plain, blocks)


def test_torch_semantics_block_path_equals_plain_path(synth_dir, data, tmp_path):
    opt = replace(optimizer_config("adam"), semantics="torch")
    config = replace(ExperimentConfig(data_dir=str(synth_dir), epochs=1), optimizer=opt)
    assert_same_run(run(config, data, runtime(1), tmp_path / "plain"), run(config, data, runtime(7), tmp_path / "b"))


def test_same_seed_twice_is_bitwise_identical_and_callbacks_loggers_run_per_epoch(synth_dir, data, tmp_path):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2)
    epochs = []
    first = run(config, data, runtime(4), tmp_path / "a", on_epoch=lambda *args: epochs.append(args))
    assert_same_run(first, run(config, data, runtime(4), tmp_path / "b"))
    assert [(e, total) for e, total, _ in epochs] == [(1, 2), (2, 2)]
    assert epochs[1][2]["val_acc"] == first[0].history["val_acc"][1]
    rows = list(csv.DictReader(open(tmp_path / "a" / "csv" / "metrics.csv")))
    logged = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    assert logged == pytest.approx(first[0].history["train_loss"], rel=1e-6)
    steps = -(-len(data.y_train) // config.batch_size)
    assert first[1]["global_step"] == 2 * steps  # optimizer steps, as on the plain path
    assert list((tmp_path / "a" / "checkpoints").glob("best-*.ckpt"))


def test_resume_from_a_checkpoint_continues_the_same_trajectory(synth_dir, data, tmp_path):
    """Lightning's ckpt_path restores the model, the optimizer (with its host step count, from which the
    alpha table is rebuilt) and the loops: 1 epoch + resume to 2 equals 2 epochs straight."""
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2)
    weights = initial_weights(config, data.input_dim, data.n_classes)

    def trainer_fit(epochs: int, root: Path, ckpt_path=None) -> FastMLPSystem:
        L.seed_everything(0, verbose=False)
        system = FastMLPSystem(config.to_dict(), data.input_dim, data.n_classes, weights=weights)
        trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root,
                            callbacks=[L.callbacks.ModelCheckpoint(dirpath=root, save_last=True)])
        trainer.fit(system, datamodule=FastDataModule(data, config, 3), ckpt_path=ckpt_path)
        return system

    straight = trainer_fit(2, tmp_path / "straight")
    trainer_fit(1, tmp_path / "first")
    resumed = trainer_fit(2, tmp_path / "resumed", ckpt_path=tmp_path / "first" / "last.ckpt")
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in resumed.history] == [straight.history[1]["train_loss"]]


@pytest.mark.parametrize("how", ["huge_lr", "nan_input"])
def test_non_finite_loss_fails_the_run_at_the_epoch_check(synth_dir, data, tmp_path, how):
    import lightning_ft
    from ftmed_core.records import read_record

    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2)
    if how == "huge_lr":
        config = replace(config, optimizer=optimizer_config("sgd", learning_rate=1e10))
    else:
        x = data.x_train.copy()
        x[5] = np.nan
        data = replace(data, train=Split(x, data.y_train))  # float32 features are fed as they are
    record = lightning_ft.train(config, run_dir=tmp_path / "run", runtime=runtime(4), data=data)
    assert record.status == "failed" and "NonFiniteLoss" in record.error
    assert read_record(tmp_path / "run").history["train_loss"][-1] is None


# -- no host synchronisation inside a block -------------------------------------------------------------

class _HostReads(TorchDispatchMode):
    """Records every op that hands a tensor's value to the host (what `.item()`, `bool(t)`, `float(t)`
    and friends dispatch to): on CUDA each would be a device synchronisation."""

    SYNCING = ("aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal")

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in self.SYNCING or (name.startswith("aten._to_copy") and any(
                isinstance(a, torch.Tensor) and a.device.type != "cpu" for a in args)):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["adam", "sgd", "lion"])
def test_a_block_reads_nothing_back_to_the_host(synth_dir, data, name):
    config = replace(ExperimentConfig(data_dir=str(synth_dir)), optimizer=optimizer_config(name, momentum=None))
    model = build_mlp(config, data.input_dim, data.n_classes)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    runner = BlockRunner(model, optimizer, config, torch.device("cpu"), graphs=False)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    blocks = iter(BlockBatches(x, y, config.batch_size, 0, True, lambda: 0, 4))
    runner.run(next(blocks))  # first block: lazy optimizer state, cached constants
    block = next(blocks)
    runner.pos.fill_(block.first_row)
    with _HostReads() as reads:
        runner.steps(block.x, block.y, block.n_steps, block.batch_size)
    assert reads.seen == []
    # ... and the dispatch mode does see a host read when there is one.
    with _HostReads() as reads:
        runner.sums.sum().item()
    assert reads.seen


# -- plans and knobs ------------------------------------------------------------------------------------

def test_plans_fall_back_to_the_plain_path_where_blocks_do_not_apply():
    assert plan_fast_path(RuntimeConfig(accelerator="cpu"), cuda=False, world_size=1).steps == 1  # CPU default
    cuda = plan_fast_path(RuntimeConfig(accelerator="gpu"), cuda=True, world_size=1)
    assert cuda.steps == AUTO_STEPS_CUDA and cuda.graphs is None
    assert plan_fast_path(RuntimeConfig(accelerator="gpu", devices=2), cuda=True, world_size=2).steps == 1
    assert plan_fast_path(RuntimeConfig(accelerator="gpu", precision="16-mixed"), cuda=True, world_size=1).steps == 1
    bf16 = plan_fast_path(RuntimeConfig(accelerator="gpu", precision="bf16-mixed"), cuda=True, world_size=1)
    assert bf16.steps == AUTO_STEPS_CUDA and bf16.graphs is False
    assert plan_fast_path(RuntimeConfig(accelerator="gpu", cuda_graphs=False), True, 1).graphs is False
    assert plan_fast_path(runtime(8), cuda=False, world_size=1).steps == 8
    with pytest.raises(ConfigError, match="CUDA"):
        RuntimeConfig(accelerator="cpu", cuda_graphs=True)
    with pytest.raises(ConfigError, match="steps_per_execution"):
        RuntimeConfig(steps_per_execution=-1)
    with pytest.raises(ConfigError, match="required"):
        plan_fast_path(RuntimeConfig(cuda_graphs=True), cuda=False, world_size=1)
    with pytest.raises(ConfigError, match="several processes"):
        plan_fast_path(RuntimeConfig(steps_per_execution=4, devices=2), cuda=False, world_size=2)
    assert plan_fast_path(RuntimeConfig(accelerator="gpu", strategy="ddp"), cuda=True, world_size=1).steps == 1


def test_which_optimizers_can_be_captured():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert capturable(build_optimizer(params, optimizer_config("adam")))
    assert capturable(build_optimizer(params, optimizer_config("sgd", momentum=0.9)))
    assert not capturable(build_optimizer(params, optimizer_config("nadam")))
    assert not capturable(build_optimizer(params, optimizer_config("adamax")))
    assert capturable(build_optimizer(params, replace(optimizer_config("adam"), semantics="torch")))
    assert not capturable(build_optimizer(params, replace(optimizer_config("rmsprop"), semantics="torch")))


def test_every_keras_rule_states_whether_it_is_capturable():
    """Capturability is a property of the rule (a new rule states it in its class), not a list of names."""
    from lightning_ft import optimizers as rules
    classes = [c for c in vars(rules).values() if isinstance(c, type) and issubclass(c, rules.KerasOptimizer)
               and c is not rules.KerasOptimizer]
    assert {c.__name__ for c in classes if c.CAPTURABLE} == {
        "KerasSGD", "KerasRMSprop", "KerasAdagrad", "KerasAdadelta", "KerasLion"}
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert not rules.KerasAdam(params, fused=False).capturable()  # alpha on the device needs the fused kernel


def test_describe_names_cuda_graphs_only_where_a_block_was_replayed(synth_dir, data):
    config = ExperimentConfig(data_dir=str(synth_dir))
    model = build_mlp(config, data.input_dim, data.n_classes)
    runner = BlockRunner(model, build_optimizer(model.parameters(), config.optimizer), config, torch.device("cpu"), None)
    plan = plan_fast_path(runtime(4), cuda=False, world_size=1)
    assert describe(plan, runner) == "blocks of 4 steps"
    runner.graphs = True  # allowed, but nothing replayed (e.g. only the warm-up block ran)
    assert "CUDA graphs" not in describe(plan, runner).split("(")[0] and "no full block" in describe(plan, runner)
    runner.replays = 3
    assert describe(plan, runner) == "blocks of 4 steps, CUDA graphs"
    runner.capture_error = "RuntimeError: x"
    assert "capture failed, ran eagerly" in describe(plan, runner)


def test_graphs_are_dropped_when_a_buffer_they_read_is_replaced(synth_dir, data):
    """Captured graphs read fixed addresses: a new split tensor or a reallocated permutation buffer must
    drop them (on CPU the cache is empty in practice: a sentinel stands in for a captured graph)."""
    config = ExperimentConfig(data_dir=str(synth_dir), batch_size=4)
    model = build_mlp(config, data.input_dim, data.n_classes)
    runner = BlockRunner(model, build_optimizer(model.parameters(), config.optimizer), config, torch.device("cpu"), None)
    x = torch.from_numpy(np.ascontiguousarray(data.train.raw_rows(slice(0, 16))))
    y = torch.from_numpy(np.ascontiguousarray(data.train.labels[:16]))

    def block(x, y, perm):
        return Block(x, y, perm, 0, 1, 4, 0, 4, True)

    runner.run(block(x, y, torch.arange(16)))
    runner._graphs[(1, 4)] = "captured"
    runner.run(block(x, y, torch.arange(16)))  # a new epoch: same buffers, graphs kept
    assert (1, 4) in runner._graphs
    x2 = x.clone()
    runner.run(block(x2, y, torch.arange(16)))  # a new split tensor
    assert not runner._graphs
    runner._graphs[(1, 4)] = "captured"
    runner.run(block(x2, y, torch.arange(12)))  # same split, a permutation of another length: new buffer
    assert not runner._graphs


def test_forcing_graphs_for_an_uncapturable_optimizer_is_a_clear_error(synth_dir, data):
    config = replace(ExperimentConfig(data_dir=str(synth_dir)), optimizer=optimizer_config("nadam"))
    model = build_mlp(config, data.input_dim, data.n_classes)
    with pytest.raises(ConfigError, match="cannot be captured"):
        BlockRunner(model, build_optimizer(model.parameters(), config.optimizer), config, torch.device("cpu"), True)


# -- CUDA -----------------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("variant", ["baseline", "sgd-momentum", "wider-deeper"])
def test_cuda_graph_blocks_match_eager_blocks_and_the_plain_path(synth_dir, data, tmp_path, variant):
    config = replace(get_variant(variant).config, data_dir=str(synth_dir), epochs=2)
    gpu = dict(accelerator="gpu", threads=1, progress=False)
    plain = run(config, data, RuntimeConfig(steps_per_execution=1, **gpu), tmp_path / "plain")
    eager = run(config, data, RuntimeConfig(steps_per_execution=5, cuda_graphs=False, **gpu), tmp_path / "eager")
    graphs = run(config, data, RuntimeConfig(steps_per_execution=5, cuda_graphs=True, **gpu), tmp_path / "graphs")
    assert graphs[0].environment["training_path"] == "blocks of 5 steps, CUDA graphs"
    assert_same_run(eager, graphs)  # replayed kernels are the eager kernels
    for key in plain[1]["state_dict"]:  # the plain path differs at most by float32 rounding
        torch.testing.assert_close(plain[1]["state_dict"][key], graphs[1]["state_dict"][key], rtol=1e-4, atol=1e-5)


@needs_cuda
def test_cuda_graph_run_is_bitwise_repeatable(synth_dir, data, tmp_path):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2)
    rt = RuntimeConfig(accelerator="gpu", threads=1, progress=False, steps_per_execution=5, cuda_graphs=True)
    assert_same_run(run(config, data, rt, tmp_path / "a"), run(config, data, rt, tmp_path / "b"))


def test_compare_default_jobs_on_cpu_and_one_gpu(monkeypatch):
    import ftmed.grid as grid
    from ftmed.grid import CPU_JOBS, GPU_JOBS, default_jobs

    cores = grid._cores()
    assert default_jobs("cpu", 1) == min(CPU_JOBS, cores)
    monkeypatch.setattr(grid, "_cores", lambda: 1)
    assert default_jobs("cpu", 1) == 1  # never more runs than cores
    monkeypatch.setattr(grid, "_cores", lambda: 16)
    assert default_jobs("cpu", 1) == CPU_JOBS == 2
    assert default_jobs("gpu", 1) == GPU_JOBS > 1
    assert default_jobs("gpu", 2) == 1  # a multi-GPU run takes the devices itself
    assert default_jobs("auto", 1) == (GPU_JOBS if CUDA else CPU_JOBS)
