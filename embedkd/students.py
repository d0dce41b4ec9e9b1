"""Build a student: any HF/sentence-transformers model, optionally layer-pruned, projected to the teacher dim.

The projection is a sentence-transformers ``Dense`` module (identity activation) appended to the model,
so it is saved inside the student and ``SentenceTransformer(output)`` returns teacher-dimension vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from embedkd.errors import ConfigError, EmbedkdError

logger = logging.getLogger(__name__)

# Attribute paths of the transformer layer list in common encoder architectures.
LAYER_PATHS = (
    "encoder.layer",
    "transformer.layer",
    "layers",
    "encoder.layers",
    "transformer.layers",
    "layer",
)


def load_student(name: str, *, max_seq_length: int | None = None, device: str | None = None):
    """Load a SentenceTransformer (a plain HF encoder gets mean pooling)."""
    from sentence_transformers import SentenceTransformer

    from embedkd.encoders import resolve_model_checked

    model = SentenceTransformer(resolve_model_checked(name, "student model"), device=device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def evenly_spaced_layers(total: int, keep: int) -> tuple[int, ...]:
    """``keep`` layer indices spread over ``total`` layers, always keeping the first and the last."""
    if keep >= total:
        return tuple(range(total))
    if keep == 1:
        return (total - 1,)
    return tuple(sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)}))


def _layer_list(hf_model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    for path in LAYER_PATHS:
        owner = hf_model
        try:
            for attr in path.split(".")[:-1]:
                owner = getattr(owner, attr)
            layers = getattr(owner, path.split(".")[-1])
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return owner, path.split(".")[-1], layers
    raise EmbedkdError(f"cannot find the transformer layers of {type(hf_model).__name__} to prune")


def prune_layers(
    model, layers: Sequence[int] | None = None, num_layers: int | None = None
) -> tuple[int, ...]:
    """Keep only some transformer layers of a SentenceTransformer, in place.

    Args:
        model: the SentenceTransformer whose first module is a Transformer.
        layers: exact 0-based layer indices to keep.
        num_layers: keep this many evenly spaced layers instead.

    Returns:
        The kept layer indices.
    """
    hf_model = model[0].auto_model
    owner, attr, current = _layer_list(hf_model)
    total = len(current)
    keep = tuple(layers) if layers is not None else evenly_spaced_layers(total, int(num_layers or total))
    bad = [i for i in keep if not 0 <= i < total]
    if bad:
        raise ConfigError(
            f"--student-layers {list(keep)} names layers {bad} but the student has {total} (0..{total - 1})"
        )
    if list(keep) != sorted(set(keep)):
        raise ConfigError(f"--student-layers must be strictly increasing, got {list(keep)}")
    setattr(owner, attr, nn.ModuleList([current[i] for i in keep]))
    for cfg_attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(hf_model.config, cfg_attr):
            setattr(hf_model.config, cfg_attr, len(keep))
    logger.info("student pruned to layers %s of %d", list(keep), total)
    return keep


def add_projection(model, out_dim: int):
    """Append a linear ``Dense`` projection to ``out_dim``; returns the new SentenceTransformer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    in_dim = int(model.get_embedding_dimension())
    dense = Dense(in_dim, out_dim, bias=True, activation_function=nn.Identity())
    projected = SentenceTransformer(modules=[*model, dense], device=str(model.device))
    projected.max_seq_length = model.max_seq_length
    logger.info("student: added projection %d -> %d", in_dim, out_dim)
    return projected


def init_projection_lstsq(model, texts: Sequence[str], targets: np.ndarray, *, batch_size: int = 64) -> float:
    """Set the last ``Dense`` module to the least-squares map from the student's features to ``targets``.

    Starting training from the best linear map (rather than a random one) removes most of the initial
    loss, so short runs reach far higher fidelity. Returns the mean cosine of that linear fit.
    """
    from sentence_transformers import SentenceTransformer

    modules = list(model)
    at = max(i for i, m in enumerate(modules) if type(m).__name__ == "Dense")
    dense = modules[at]
    body = SentenceTransformer(modules=modules[:at], device=str(model.device))
    feats = body.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    x = np.hstack([feats, np.ones((len(feats), 1), dtype=feats.dtype)])
    # Small ridge term keeps the solve stable when there are fewer texts than features.
    ridge = 1e-3 * np.eye(x.shape[1])
    w = np.linalg.solve(x.T @ x + ridge, x.T @ targets)
    with torch.no_grad():
        dense.linear.weight.copy_(torch.from_numpy(w[:-1].T.astype(np.float32)))
        dense.linear.bias.copy_(torch.from_numpy(w[-1].astype(np.float32)))
    pred = x @ w
    cos = (pred * targets).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(targets, axis=1) + 1e-12)
    return float(cos.mean())


def build_student(
    name: str,
    teacher_dim: int,
    *,
    layers: Sequence[int] | None = None,
    num_layers: int | None = None,
    projection: bool = True,
    max_seq_length: int | None = None,
    device: str | None = None,
):
    """Load, prune and (when dims differ) project a student so it outputs ``teacher_dim`` vectors.

    Raises:
        ConfigError: dims differ and ``projection`` is off.
    """
    model = load_student(name, max_seq_length=max_seq_length, device=device)
    if layers is not None or num_layers is not None:
        prune_layers(model, layers, num_layers)
    dim = int(model.get_embedding_dimension())
    if dim != teacher_dim:
        if not projection:
            raise ConfigError(
                f"student {name!r} outputs {dim}-d vectors but the teacher {teacher_dim}-d, "
                "and the projection is disabled (drop --no-projection)"
            )
        model = add_projection(model, teacher_dim)
    return model


def set_trainable(model, *, dropout: float | None = None, freeze_embeddings: bool = False) -> None:
    """Set every dropout of ``model`` to ``dropout`` (None: leave them) and optionally freeze token embeddings.

    The new dropout is also written into the HF config, so a saved and reloaded student keeps it.
    """
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = dropout
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if config is not None and hasattr(config, name):
                setattr(config, name, dropout)
    if freeze_embeddings:
        auto = getattr(model[0], "auto_model", None)
        embeddings = auto.get_input_embeddings() if auto is not None else None
        if embeddings is None:
            raise EmbedkdError(f"cannot find the token embeddings of {type(model[0]).__name__} to freeze")
        embeddings.weight.requires_grad_(False)
        logger.info("student: token embeddings frozen (%d weights)", embeddings.weight.numel())


QUANTIZE_CHOICES = ("int8",)


def quantize_for_cpu(model, scheme: str = "int8"):
    """Quantize ``model``'s linear layers for CPU inference, in place; returns the model.

    ``int8`` is PyTorch's dynamic quantization: weights stored as int8, activations quantized per
    batch at run time, so nothing needs calibrating. The vectors stay close to the float ones but not
    equal, and since the activation scale is taken over the whole batch, a text's vector depends
    slightly on the other texts it is encoded with. Measure speed and quality on your task
    (``bench/ontology_iu.py --quantize int8`` does for report retrieval). The
    quantized model is for inference only: it cannot be trained further or saved as a normal
    SentenceTransformer, so quantize at load time (``embedkd serve --quantize int8``).

    Args:
        model: a SentenceTransformer on the CPU.
        scheme: ``int8`` (the only scheme).

    Raises:
        ConfigError: an unknown scheme, or a model that is not on the CPU.
    """
    if scheme not in QUANTIZE_CHOICES:
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {scheme!r}")
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ConfigError(
            f"{scheme} quantization runs on the CPU only; the model is on {device} (use --device cpu)"
        )
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks the eager-mode API deprecated in favour of torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    model.eval()
    logger.info("quantized the model's linear layers to %s (dynamic, CPU)", scheme)
    return model
