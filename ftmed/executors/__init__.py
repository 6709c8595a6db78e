"""Where `ftmed compare` runs its grid: a process pool on this machine, or one Ray task per run on a cluster."""
from ftmed.executors.ray_driver import (  # noqa: F401
    DATA_CACHE, TASK_NAME, Executor, ExecutorName, LocalExecutor, RayExecutor, make_executor, materialize_data,
)
