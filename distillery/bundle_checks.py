"""The checks every bundle passes before it is published, uploaded or trained: no pickled
weights anywhere, a config.json that transformers knows without running the checkpoint's own
code, a tokenizer with its vocabulary, and a label map that matches the classifier's outputs.

`load_checkpoint` checks a plain Hugging Face folder (an upload) and loads it as a classifier;
`check_bundle` checks a folder that is already a bundle (a trained student) against its own
metadata. Errors say what to fix; `field` names the upload form field at fault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from distillery.backbones import Backbone, count_parameters, load_classifier
from distillery.bundle import BundleError, BundleMetadata, write_metadata

PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy")
# A tokenizer needs its vocabulary: without one of these, transformers quietly builds an empty
# tokenizer that turns every word into [UNK].
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


class CheckpointError(BundleError):
    """A checkpoint folder fails a check; `title` is a short summary, `field` the form field."""

    def __init__(self, title: str, detail: str, *, field: str = "file") -> None:
        super().__init__(detail)
        self.title, self.field = title, field


def checkpoint_root(folder: Path) -> Path:
    """The folder holding config.json: the archive's top, or its single top-level folder."""
    if (folder / "config.json").is_file():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("__MACOSX")]
    if len(children) == 1 and (children[0] / "config.json").is_file():
        return children[0]
    raise CheckpointError("Not a checkpoint", "the archive has no config.json at its top level")


def check_config(root: Path) -> None:
    """config.json must be a JSON object naming an architecture transformers ships."""
    try:
        raw = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError("Invalid config", f"config.json is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise CheckpointError(
            "Invalid config",
            'config.json must be an object with a model_type (e.g. "bert"), as '
            "save_pretrained writes it",
        )
    if "auto_map" in raw:
        raise CheckpointError(
            "Custom code refused",
            "config.json asks to run the checkpoint's own code (auto_map); remote code is "
            "never run here: use an architecture built into transformers",
        )


def labels_from_config(root: Path, given: list[str] | None) -> tuple[str, list[str]]:
    config = AutoConfig.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
    if given is not None and len(set(given)) != len(given):
        raise CheckpointError("Invalid labels", "labels repeat a name", field="labels")
    if config.problem_type == "regression" or (config.num_labels == 1 and not given):
        return "regression", []
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    labels = [id2label[i] for i in sorted(id2label)]
    if given:
        if len(given) != config.num_labels:
            raise CheckpointError(
                "Label map mismatch",
                f"labels lists {len(given)} names but the checkpoint has "
                f"{config.num_labels} outputs",
                field="labels",
            )
        labels = given
    elif all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        raise CheckpointError(
            "Missing label map",
            "the checkpoint's config.json has no id2label names (only LABEL_0...); "
            "send labels, e.g. labels=entailment,not_entailment",
            field="labels",
        )
    if len(set(labels)) != len(labels):
        raise CheckpointError(
            "Invalid labels", "the checkpoint's id2label repeats a name", field="labels"
        )
    return ("binary" if len(labels) == 2 else "multiclass"), labels


def check_files(root: Path) -> None:
    """No pickled weights, a config.json transformers knows, a tokenizer vocabulary."""
    pickled = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in PICKLED_SUFFIXES
    )
    if pickled:
        raise CheckpointError(
            "Pickled weights refused",
            f"{', '.join(pickled)}: pickled weights can run code when loaded; "
            "convert them to safetensors (model.save_pretrained(dir, "
            "safe_serialization=True)) and upload again",
        )
    check_config(root)
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            "Missing tokenizer",
            "the checkpoint has no tokenizer vocabulary (one of "
            f"{', '.join(TOKENIZER_FILES)}); save the tokenizer with "
            "tokenizer.save_pretrained(dir) next to the model",
        )


def load_checkpoint(root: Path, labels: list[str] | None) -> tuple[Backbone, str, list[str]]:
    """Check a Hugging Face checkpoint folder and load it as a classifier; returns it with its
    problem type and class names (`labels`, or the config's id2label)."""
    check_files(root)
    try:
        problem_type, label_names = labels_from_config(root, labels)
        backbone = load_classifier(
            root,
            num_labels=max(1, len(label_names)),
            id2label=dict(enumerate(label_names)) if label_names else None,
            problem_type=problem_type,
        )
        backbone.tokenizer("a tokenizer check", truncation=True, max_length=16)
    except CheckpointError:
        raise
    except Exception as exc:  # transformers' many ways of saying "not a usable checkpoint"
        message = str(exc).replace(str(root), "<checkpoint>")
        raise CheckpointError("Unusable checkpoint", message[:2000] or type(exc).__name__) from exc
    return backbone, problem_type, label_names


def bundle_from_checkpoint(
    root: Path, labels: list[str] | None, text_columns: list[str], lineage: dict[str, Any]
) -> BundleMetadata:
    """Turn a checked checkpoint folder into a bundle in place, and return its metadata."""
    backbone, problem_type, label_names = load_checkpoint(root, labels)
    metadata = BundleMetadata(
        problem_type=problem_type,
        labels=label_names,
        text_columns=text_columns,
        num_parameters=count_parameters(backbone.model),
        architecture=type(backbone.model).__name__,
        lineage=lineage,
    )
    # The label map goes into config.json too, so the bundle, once downloaded, names its
    # classes for plain transformers users and when uploaded again.
    backbone.model.config.save_pretrained(root)
    write_metadata(root, metadata)
    return metadata


def check_bundle(folder: Path, metadata: BundleMetadata) -> None:
    """The upload checks, on a bundle about to be published with `metadata`: its files, and
    a classifier head with one output per label (one for regression)."""
    check_files(folder)
    config: Any = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    outputs = max(1, len(metadata.labels))
    if config.num_labels != outputs:
        raise CheckpointError(
            "Label map mismatch",
            f"the bundle names {len(metadata.labels)} labels but its classifier has "
            f"{config.num_labels} outputs",
        )
