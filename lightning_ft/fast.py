"""The fast training path: several optimizer steps per Lightning `training_step`, optionally replayed
from a CUDA graph, with the plain path's numbers.

Why: on a GPU the study's MLP is launch- and Python-bound. A Lightning step costs milliseconds of host
work while the step's kernels take a fraction of that, so the plain path (one optimizer step per
`training_step`) runs no faster than the CPU. Here one `training_step` runs a *block* of K steps (Keras's
`steps_per_execution`) under manual optimization, and on CUDA the block is captured once in a CUDA graph
and replayed, so a block costs one graph launch.

What stays the same as the plain path (`MLPSystem` with automatic optimization):
- the batch order: the core's `epoch_permutation` / `batch_bounds`; each step gathers its rows on the
  device from the device-resident split (`index_select` with the epoch's permutation); a uint8 split is
  converted per batch by the plain path's `to_unit_float` (true float32 division on every device; a
  division by a Python number would run as a multiply by the reciprocal on CUDA and round differently);
- the step: grads set to None, forward, the plain path's `task_loss` (multi-label too), backward, `step()`;
- the epoch metrics: the same float64 running sums (loss * rows, correct, rows) in the same order, read
  once per epoch by `MLPSystem._reduced`; the finite-loss check once per epoch from that sum;
- the last partial batch (another shape) runs as its own eager step, never from a graph.
On CPU the block path is bitwise equal to the plain path (tests/test_lightning_fast.py). On CUDA, eager
and replayed kernels are the same kernels; `scripts/gpu_checks.py` measures the max |difference| there.

No host synchronisation inside a block: the row offset and the step index are device tensors advanced
inside the block; Keras-exact Adam reads its per-step `alpha` from a device table filled once per epoch
with `keras_adam_alpha` (the host formula, so the values are bitwise the host path's). The host keeps the
optimizer's `step` count (it knows how many steps it dispatched) so checkpoints and resume are unchanged.

Capturable optimizers (CUDA graphs): each Keras-exact rule says so itself (`KerasOptimizer.capturable`):
sgd, rmsprop, adagrad, adadelta, lion (no step-dependent scalar), adam/adamw (the alpha table, fused
kernel); torch.optim SGD and fused Adam/AdamW. Others
(Keras adamax, nadam: step-dependent host scalars) run their blocks eagerly. DDP, `16-mixed` (needs a
GradScaler) and `devices > 1` use the plain path; bf16-mixed runs blocks eagerly (autocast + graphs are
not worth the risk at this size).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import ExperimentData
from ftmed_core.errors import ConfigError
from ftmed_core.protocol import epoch_permutation, steps_per_epoch
from lightning_ft.datamodule import DeviceSplit, MedMNISTDataModule, to_unit_float
from ftmed_core.tasks import head_for
from lightning_ft.losses import task_correct, task_loss
from lightning_ft.optimizers import KerasAdam, KerasOptimizer, keras_adam_alpha
from lightning_ft.system import MLPSystem

# Steps per training_step when RuntimeConfig.steps_per_execution is 0 (automatic). On CUDA the host's
# per-block work (Lightning's loop, ~3.5 ms) then hides behind the GPU's work for the block.
# CPU: 1 (the plain path); benchmarks/gpu_speed.py measures the block path on CPU too.
AUTO_STEPS_CUDA = 32
AUTO_STEPS_CPU = 1

@dataclass(frozen=True)
class FastPlan:
    """How a run trains: `steps` optimizer steps per training_step (1 = the plain path) and whether to
    use CUDA graphs (None: wherever the optimizer allows; True: required; False: never)."""

    steps: int
    graphs: bool | None
    cuda: bool

    @property
    def enabled(self) -> bool:
        return self.steps > 1


def resolve_steps(runtime: RuntimeConfig, cuda: bool) -> int:
    if runtime.steps_per_execution > 0:
        return runtime.steps_per_execution
    return AUTO_STEPS_CUDA if cuda else AUTO_STEPS_CPU


def plan_fast_path(runtime: RuntimeConfig, cuda: bool, world_size: int) -> FastPlan:
    """The path `runtime` asks for on this device; the plain path where the block path does not apply."""
    steps = resolve_steps(runtime, cuda)
    if runtime.cuda_graphs and not cuda:
        raise ConfigError("CUDA graphs were required (cuda_graphs=True) but this run does not train on CUDA")
    plain_reason = None
    if world_size > 1 or runtime.strategy not in ("auto", "single_device"):
        # DDP's reducer expects one backward per wrapped forward, not K.
        plain_reason = f"several processes / strategy {runtime.strategy!r}"
    elif runtime.precision == "16-mixed" and cuda:
        plain_reason = "16-mixed (needs a GradScaler)"
    if plain_reason is not None:
        if runtime.cuda_graphs or runtime.steps_per_execution > 1:
            raise ConfigError(f"steps_per_execution > 1 / CUDA graphs are not available with {plain_reason}")
        steps = 1
    graphs = runtime.cuda_graphs
    if graphs is None and runtime.precision != "32":
        graphs = False
    if graphs and runtime.precision != "32":
        raise ConfigError(f"CUDA graphs need precision 32, got {runtime.precision}")
    return FastPlan(steps=steps, graphs=graphs if cuda else False, cuda=cuda)


def describe(plan: FastPlan, runner: "BlockRunner | None") -> str:
    """What ran, for the run record: 'plain', 'blocks of 32 steps', 'blocks of 32 steps, CUDA graphs'
    (only where at least one block was replayed from a graph)."""
    if not plan.enabled:
        return "plain (1 step per training_step)"
    text = f"blocks of {plan.steps} steps"
    if runner is None:
        return text
    if runner.capture_error:
        return text + f" (CUDA graph capture failed, ran eagerly: {runner.capture_error})"
    if runner.replays:
        return text + ", CUDA graphs"
    if runner.graphs:  # graphs allowed, but no full block came after the eager warm-up block
        return text + " (eager: no full block after the warm-up to replay from a CUDA graph)"
    return text


# ------------------------------------------------------------------------------------------------ data

class Block:
    """One training_step's work: `n_steps` consecutive batches of `batch_size` rows, starting at row
    `first_row` of the epoch's permutation `perm` over the split (`x`, `y`), all on the training device.

    Deliberately not a dataclass or tuple, so Lightning's batch transfer passes it through untouched.
    """

    __slots__ = ("x", "y", "perm", "first_row", "n_steps", "batch_size", "step_in_epoch", "epoch_steps", "full")

    def __init__(self, x, y, perm, first_row, n_steps, batch_size, step_in_epoch, epoch_steps, full):
        self.x, self.y, self.perm = x, y, perm
        self.first_row, self.n_steps, self.batch_size = first_row, n_steps, batch_size
        self.step_in_epoch, self.epoch_steps = step_in_epoch, epoch_steps
        self.full = full  # False for the last partial batch: it never runs from a graph


def epoch_blocks(n_rows: int, batch_size: int, steps: int) -> list[tuple[int, int, int]]:
    """(first_row, n_steps, rows_per_step) of each block: full batches in blocks of `steps` (the last block
    may have fewer), then the last partial batch, if any, alone."""
    full = n_rows // batch_size
    blocks = [(s * batch_size, min(steps, full - s), batch_size) for s in range(0, full, steps)]
    if n_rows % batch_size:
        blocks.append((full * batch_size, 1, n_rows % batch_size))
    return blocks


class BlockBatches:
    """The training blocks of one epoch (the loader Lightning iterates); `iter()` asks `epoch_fn` for the
    0-based epoch and puts that epoch's permutation on the split's device once."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, shuffle: bool,
                 epoch_fn: Callable[[], int], steps: int):
        if steps < 1:
            raise ValueError(f"steps per block must be >= 1, got {steps}")
        self.x, self.y, self.batch_size, self.seed, self.shuffle = x, y, batch_size, seed, shuffle
        self.epoch_fn, self.steps = epoch_fn, steps
        self.blocks = epoch_blocks(len(x), batch_size, steps)

    def __len__(self) -> int:
        return len(self.blocks)

    def __iter__(self) -> Iterator[Block]:
        n = len(self.x)
        perm = torch.from_numpy(epoch_permutation(self.seed, self.epoch_fn(), n, self.shuffle)).to(self.x.device)
        total = steps_per_epoch(n, self.batch_size)
        step = 0
        for first_row, n_steps, rows in self.blocks:
            yield Block(self.x, self.y, perm, first_row, n_steps, rows, step, total, rows == self.batch_size)
            step += n_steps


class FastDataModule(MedMNISTDataModule):
    """`MedMNISTDataModule` whose training loader yields `Block`s of `steps` batches (validation unchanged)."""

    def __init__(self, data: ExperimentData, config: ExperimentConfig, steps: int, eval_batch_size: int = 1024):
        super().__init__(data, config, eval_batch_size)
        self.steps = steps

    def setup(self, stage: str | None = None) -> None:
        """The training split must be one tensor on the training device: resident on a GPU (as stored,
        uint8) when it fits; on the CPU (where the block path is opt-in) the split's rows are read once into
        host memory as stored."""
        super().setup(stage)
        train = self.sources["train"]
        if isinstance(train, DeviceSplit):
            return
        if self.device.type != "cpu":
            split = self.data.train
            raise RuntimeError(
                f"the block path needs the training split resident on {self.device} "
                f"({len(split) * split.input_dim * split.stored_dtype.itemsize / 1e9:.1f} GB as stored) and it "
                "does not fit in the free memory; run with --steps-per-execution 1")
        self.sources["train"] = DeviceSplit(torch.from_numpy(self.data.train.raw_rows(slice(None))), train.labels)

    def train_dataloader(self) -> BlockBatches:
        train = self.sources["train"]
        return BlockBatches(train.images, train.labels, self.config.batch_size, self.config.seed,
                            self.config.shuffle, self._current_epoch, self.steps)


def as_features(x: torch.Tensor) -> torch.Tensor:
    """A gathered batch as float32 (rows, features): images are flattened, then converted by the plain
    path's `to_unit_float` (uint8 -> true float32 division by 255 on x's device, bitwise the core's
    `x / 255`; float32 rows pass through), so both paths see bitwise the same inputs on every device."""
    if x.dim() > 2:
        x = x.reshape(x.shape[0], -1)
    return to_unit_float(x)


# ------------------------------------------------------------------------------------------------ steps

def capturable(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer.step()` can be captured in a CUDA graph (see the module docstring)."""
    if isinstance(optimizer, KerasOptimizer):
        return optimizer.capturable()  # the rule states it (`KerasOptimizer.CAPTURABLE`)
    if isinstance(optimizer, torch.optim.SGD):
        return True
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return all(group.get("fused") for group in optimizer.param_groups)
    return False


class AdamAlphas:
    """Keras-exact Adam's per-step `alpha` on the device: a table for the epoch's steps, filled on the host
    with `keras_adam_alpha` at the epoch's first block, and a device index advanced inside the block."""

    def __init__(self, optimizer: KerasAdam, device: torch.device):
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0]
        self.index = torch.zeros(1, dtype=torch.int64, device=device)
        self.table: torch.Tensor | None = None
        self.device = device

    def fill(self, first_step: int, n_steps: int) -> bool:
        """alpha for steps first_step + 1 ... first_step + n_steps (1-based, as Keras counts). Returns True
        when the table had to be reallocated (graphs that read the old one are then stale)."""
        g = self.group
        values = np.array([keras_adam_alpha(g["lr"], g["beta_1"], g["beta_2"], first_step + 1 + i)
                           for i in range(n_steps)], dtype=np.float32)
        reallocated = self.table is None or len(self.table) != n_steps
        if reallocated:
            self.table = torch.empty(n_steps, dtype=torch.float32, device=self.device)
        self.table.copy_(torch.from_numpy(values))
        return reallocated

    def before_step(self) -> None:
        self.optimizer.alpha_override = self.table.index_select(0, self.index).squeeze(0)
        self.index.add_(1)


class BlockRunner:
    """Runs `Block`s: the K-step function eagerly, or from a CUDA graph captured once per block length.

    Static state (the graphs read these addresses): the permutation buffer, the row offset `pos`, the
    epoch sums, Adam's alpha table and index. They are refilled outside the graph between replays.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: ExperimentConfig,
                 device: torch.device, graphs: bool | None):
        self.model, self.optimizer, self.config, self.device = model, optimizer, config, device
        self.multi_label, self.head = head_for(config.dataset, config.output_activation)
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.pos = torch.zeros(1, dtype=torch.int64, device=device)
        self.perm: torch.Tensor | None = None
        self._perm_source: torch.Tensor | None = None
        self._offsets: dict[int, torch.Tensor] = {}
        self._rows: dict[int, torch.Tensor] = {}
        self.alphas = AdamAlphas(optimizer, device) if (isinstance(optimizer, KerasAdam) and optimizer.fused
                                                         and len(optimizer.param_groups) == 1) else None
        can_graph = device.type == "cuda" and capturable(optimizer)
        if graphs and not can_graph:
            raise ConfigError(f"CUDA graphs were required but {type(optimizer).__name__} on {device.type} "
                              "cannot be captured; use --no-cuda-graphs")
        self.graphs = bool(can_graph if graphs is None else graphs)
        self.required = bool(graphs)
        self.capture_error: str | None = None
        if self.graphs:
            for group in optimizer.param_groups:
                if "capturable" in group:  # torch.optim Adam/AdamW (fused): state steps are on the device
                    group["capturable"] = True
        # Captured graphs by (steps, batch size); valid only while the static buffers they read (the split,
        # the permutation buffer, Adam's alpha table) keep their addresses: cleared when one is replaced.
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._split_ptrs: tuple[int, int] | None = None
        self.replays = 0  # blocks replayed from a graph (what `describe` reports)
        self._stream = None  # the warm-up and capture stream
        self._warmed_up = False

    # -- the block -------------------------------------------------------------------------------------
    def _const(self, cache: dict, n: int, make) -> torch.Tensor:
        if n not in cache:
            cache[n] = make(n)
        return cache[n]

    def steps(self, x_split: torch.Tensor, y_split: torch.Tensor, n_steps: int, batch_size: int) -> None:
        """`n_steps` training steps of `batch_size` rows from `pos` on; no host synchronisation."""
        offsets = self._const(self._offsets, batch_size,
                              lambda n: torch.arange(n, dtype=torch.int64, device=self.device))
        rows_done = self._const(self._rows, batch_size,
                                lambda n: torch.full((1,), float(n), dtype=torch.float64, device=self.device))
        cfg = self.config
        for _ in range(n_steps):
            rows = self.perm.index_select(0, self.pos + offsets)
            x = as_features(x_split.index_select(0, rows))
            y = y_split.index_select(0, rows)
            for p in self.params:
                p.grad = None
            logits = self.model(x)
            loss = task_loss(logits, y, self.head, cfg.loss, self.multi_label)
            loss.backward()
            if self.alphas is not None:
                self.alphas.before_step()
            self.optimizer.step()
            correct = task_correct(logits.detach(), y, self.head, self.multi_label)
            # The plain path's sums, in its order: stack([loss * rows, correct, rows]).
            self.sums.add_(torch.cat([(loss.detach().double() * batch_size).view(1), correct.double().view(1),
                                      rows_done]))
            self.pos.add_(batch_size)

    # -- host side -------------------------------------------------------------------------------------
    def _host_steps(self) -> list:
        return [group.get("step") for group in self.optimizer.param_groups]

    def _set_host_steps(self, values: list, advance: int) -> None:
        for group, value in zip(self.optimizer.param_groups, values):
            if isinstance(value, int) and not isinstance(value, bool):
                group["step"] = value + advance

    def run(self, block: Block) -> None:
        """Train on `block`: a new epoch's permutation is copied into the static buffer first."""
        if block.perm is not self._perm_source:
            if self.perm is None or self.perm.shape != block.perm.shape:
                self.perm = torch.empty_like(block.perm)
                self._graphs.clear()  # captured graphs read the old buffer's address
            self.perm.copy_(block.perm)
            self._perm_source = block.perm
            if self.alphas is not None:
                host_step = self.alphas.group["step"]
                if self.alphas.fill(host_step - block.step_in_epoch, block.epoch_steps):
                    self._graphs.clear()
        if (block.x.data_ptr(), block.y.data_ptr()) != self._split_ptrs:
            self._graphs.clear()  # a new split tensor (a new setup): graphs would gather from the old one
            self._split_ptrs = (block.x.data_ptr(), block.y.data_ptr())
        self.pos.fill_(block.first_row)
        if self.alphas is not None:
            self.alphas.index.fill_(block.step_in_epoch)
        before = self._host_steps()
        graph = self._graph(block) if self.graphs and block.full and self._warmed_up else None
        if graph is not None:
            graph.replay()
            self.replays += 1
        elif self.graphs and not self._warmed_up:
            self._warm_up(block)
        else:
            self.steps(block.x, block.y, block.n_steps, block.batch_size)
        self._set_host_steps(before, block.n_steps)

    def _warm_up(self, block: Block) -> None:
        """The first block runs eagerly on the side stream that later captures (torch's recipe; the same
        stream, so that per-stream library handles and workspaces exist before capture): lazy state (the
        optimizer's moments, cached constants) exists afterwards, and these are real training steps."""
        self._stream = torch.cuda.Stream(self.device)
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            self.steps(block.x, block.y, block.n_steps, block.batch_size)
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        self._warmed_up = True

    def _graph(self, block: Block) -> "torch.cuda.CUDAGraph | None":
        """The graph for blocks shaped like `block`, captured on first use. If capture fails and graphs
        were not required, warn, record why (`capture_error`) and return None: blocks then run eagerly."""
        key = (block.n_steps, block.batch_size)
        graph = self._graphs.get(key)
        if graph is not None:
            return graph
        torch.cuda.synchronize(self.device)
        for p in self.params:
            p.grad = None  # the graph allocates its gradients from its own pool
        graph = torch.cuda.CUDAGraph()
        host = self._host_steps()
        stream = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.graph(graph, stream=self._stream):
                self.steps(block.x, block.y, block.n_steps, block.batch_size)
        except Exception as exc:
            # torch.cuda.graph restores the caller's stream only on a clean exit: put it back, or every
            # later kernel (the eager blocks, validation) would run on the capture stream.
            torch.cuda.set_stream(stream)
            if self.required:
                raise
            self.capture_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"CUDA graph capture failed ({self.capture_error}); running eager blocks instead")
            self.graphs = False
            for p in self.params:
                p.grad = None
            return None
        finally:
            # Capturing records the work without running it (weights, moments, `pos` are untouched), but
            # the host-side step count advanced: put it back.
            self._set_host_steps(host, 0)
        self._graphs[key] = graph
        return graph


# ------------------------------------------------------------------------------------------------ system

class FastMLPSystem(MLPSystem):
    """`MLPSystem` under manual optimization: each training_step runs one `Block` through a `BlockRunner`.

    Checkpoints hold the same state as the plain path's (the model, the optimizer with its host step
    count, Lightning's loops): `MLPSystem.load_from_checkpoint` reads them, and `ckpt_path` resumes.
    """

    def __init__(self, config: dict, input_dim: int, n_classes: int, weights=None):
        super().__init__(config, input_dim, n_classes, weights)
        self.automatic_optimization = False
        self.plan = FastPlan(steps=2, graphs=None, cuda=False)  # train.fit sets the resolved plan
        self.runner: BlockRunner | None = None

    def _runner(self) -> BlockRunner:
        if self.runner is None:
            optimizer = self.optimizers(use_pl_optimizer=False)
            self.runner = BlockRunner(self.model, optimizer, self.config, self.device, self.plan.graphs)
        return self.runner

    def training_step(self, block: Block, batch_idx: int) -> None:
        self._runner().run(block)
        self._count_steps(block.n_steps)

    def _count_steps(self, n: int) -> None:
        """Keep `trainer.global_step` = optimizer steps, as on the plain path (loggers use it)."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for tracker in (progress.total, progress.current):
            tracker.ready += n
            tracker.completed += n

    def _reset(self, stage: str) -> None:
        if stage == "train":
            runner = self._runner()
            runner.sums.zero_()
            self._sums["train"] = runner.sums  # the graphs add into this very tensor
            return
        super()._reset(stage)

    def __getstate__(self):
        state = super().__getstate__()
        state["runner"] = None
        return state
