"""How each MedMNIST task type is trained: decided once here, for both frameworks.

| medmnist task | trained as | head | loss |
|---|---|---|---|
| multi-class | multi-class | one unit per class | Keras `categorical_crossentropy` (`ftmed_core.losses`) |
| binary-class | multi-class, 2 classes | two units, softmax (as the MedMNIST benchmarks' ResNets do) | same |
| ordinal-regression | multi-class (RetinaMNIST's 5 grades as 5 classes, as the MedMNIST benchmarks do) | same | same |
| multi-label, binary-class | multi-label | one unit per finding, each its own sigmoid | Keras `binary_crossentropy`, mean over the findings (`multilabel_per_sample_loss`) |

`output_activation` on a multi-label head: "softmax" (the study's baseline) becomes a per-finding
sigmoid — a softmax across independent findings would force them to compete — so the `sigmoid-output`
variant trains exactly the baseline there (a grid runs it once: `ftmed.grid.head_twins`). "linear" and "tanh" keep their meaning and take Keras's
probability path (clip to [1e-7, 1 - 1e-7], then binary cross-entropy).
"""

from __future__ import annotations

MULTI_CLASS, MULTI_LABEL = "multi-class", "multi-label"
_TRAINED_AS = {
    "multi-class": MULTI_CLASS,
    "binary-class": MULTI_CLASS,
    "ordinal-regression": MULTI_CLASS,
    "multi-label, binary-class": MULTI_LABEL,
}


def trained_as(medmnist_task: str) -> str:
    """`MULTI_CLASS` or `MULTI_LABEL` for a medmnist task name; ValueError naming the accepted ones."""
    try:
        return _TRAINED_AS[medmnist_task]
    except KeyError:
        raise ValueError(f"unknown MedMNIST task {medmnist_task!r}; known: {', '.join(_TRAINED_AS)}") from None


def head_activation(medmnist_task: str, output_activation: str) -> str:
    """The activation the output layer applies for this task: softmax becomes sigmoid on a multi-label head."""
    if trained_as(medmnist_task) == MULTI_LABEL and output_activation == "softmax":
        return "sigmoid"
    return output_activation


def head_for(dataset: str, output_activation: str) -> tuple[bool, str]:
    """(multi-label?, the output layer's activation) of a run on `dataset`: what each adapter builds and
    which loss it trains (`binary_crossentropy` on a multi-label head, `categorical_crossentropy` otherwise)."""
    from ftmed_core.medmnist_info import dataset_info

    task = dataset_info(dataset).task
    return trained_as(task) == MULTI_LABEL, head_activation(task, output_activation)
