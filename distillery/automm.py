"""AutoGluon AutoMM predictors in: a folder written by `MultiModalPredictor.save()` for text
classification or regression with the `hf_text` model becomes a Distillery bundle, once, when it
is registered.

What is read, and how (nothing of the folder's code or pickles ever runs):
- `assets.json` (JSON): problem type, label column, column types, number of outputs;
- `config.yaml` (YAML, safe loader): the model names, hf_text's pooling mode, max_text_len,
  text_segment_num and insert_sep, and the label preprocessing;
- `hf_text/`: the backbone's config.json and tokenizer (no weights there);
- `model.ckpt`: with `torch.load(weights_only=True)`, which builds tensors and plain containers
  only and refuses anything else;
- `df_preprocessor.pkl`: never unpickled. `read_inert_pickle` decodes its opcodes with
  pickletools and assembles plain values only; each object the pickle would build stays an
  `Inert` record of its class name and state (no import, no call), from which the label
  encoder's classes and the regression target's scaler are read. `data_processors.pkl`,
  `eval_metric.pkl` and any other pickle are not opened.

AutoMM's hf_text forward (autogluon/multimodal/models/hf_text.py, 1.6.3) is not Hugging Face's
sequence-classification head: it pools the backbone's `last_hidden_state` (the first token's
vector for `cls`, the masked mean for `mean`) and applies its own `head` Linear, with no pooler
and no dropout. `PooledHeadClassifier` does exactly that on the same backbone, and answers like
a Hugging Face classifier (`.logits`, `.hidden_states`, `.attentions`). Its text packing is
AutoMM's too (`encoding.encode_columns`). A regression target's scaling (AutoMM standardizes
targets by default) is folded into the head, so the outputs are in the target's units.

Class order: the label encoder's `classes_` (output i is classes_[i]), checked against
AutoMM's rule (scikit-learn's LabelEncoder sorts the classes; `data.pos_label`, when set, goes
last) and assets.json's output count; when they cannot be read, the request's names, ordered by
that rule. The bundle's lineage says which.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import SequenceClassifierOutput

from distillery.backbones import count_parameters, load_tokenizer
from distillery.bundle import METADATA_FILE, BundleMetadata, read_metadata, write_metadata
from distillery.bundle_checks import (
    PICKLED_SUFFIXES,
    TOKENIZER_FILES,
    CheckpointError,
    check_config,
    check_files,
)
from distillery.inert_pickle import (
    Inert,
    InertPickleError,
    inert_array,
    inert_state,
    read_inert_pickle,
)
from distillery.tables import label_to_class_name

ASSETS, CONFIG, WEIGHTS, BACKBONE = "assets.json", "config.yaml", "model.ckpt", "hf_text"
HEAD_FILE = "pooled_head.safetensors"
ARCHITECTURE = "AutoMMHFTextClassifier"
POOLING_MODES = ("cls", "mean")
PROBLEM_TYPES = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
# Keys of model.ckpt's state_dict: the lightning module's `model` is AutoMM's hf_text module,
# whose `model` is the Hugging Face backbone and whose `head` is the Linear classifier.
BACKBONE_PREFIX, HEAD_PREFIX = "model.model.", "model.head."


class PooledHeadClassifier(nn.Module):
    """A Hugging Face encoder with AutoMM's hf_text head: pool `last_hidden_state` by `cls`
    (first token) or `mean` (over the attention mask), then one Linear."""

    def __init__(self, encoder: PreTrainedModel, head: nn.Linear, pooling: str) -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, not {pooling}")
        self.encoder, self.head, self.pooling = encoder, head, pooling
        self.config = encoder.config

    @property
    def base_model(self) -> PreTrainedModel:
        return self.encoder

    def set_attn_implementation(self, implementation: str) -> None:
        self.encoder.set_attn_implementation(implementation)

    def pool(self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return last_hidden_state[:, 0]
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The head on pooled features (the distiller's softmax-regression term uses it)."""
        return self.head(features)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        output = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **extra,
        )
        logits = self.head(self.pool(output.last_hidden_state, attention_mask))
        return SequenceClassifierOutput(
            logits=logits, hidden_states=output.hidden_states, attentions=output.attentions
        )


@dataclass
class AutoMMPredictorFolder:
    """What a saved AutoMM predictor says about itself, read without running any of it."""

    root: Path
    problem_type: str
    label_column: str
    text_columns: list[str]
    outputs: int
    pooling: str
    max_text_len: int
    segments: int
    pos_label: str | None
    version: str
    # From df_preprocessor.pkl read as inert data (None when it could not be read that way):
    # the label encoder's classes in output order, and the regression target's inverse
    # scaling as (scale, offset).
    classes: list[Any] | None = None
    scaling: tuple[float, float] | None = None


def _preprocessor_facts(root: Path) -> tuple[list[Any] | None, tuple[float, float] | None]:
    """From df_preprocessor.pkl, read as inert data: the label encoder's classes_ (in output
    order) and the regression target's scaler as (scale, offset), for value = raw*scale +
    offset. (None, None) when that file is absent or not in the shape AutoMM 1.6 writes."""
    path = root / "df_preprocessor.pkl"
    if not path.is_file():
        return None, None
    try:
        preprocessor = read_inert_pickle(path.read_bytes())
        generator = inert_state(preprocessor, "_label_generator")
        fitted = inert_state(generator, "classes_") if generator is not None else None
        classes = inert_array(fitted) if fitted is not None else None
        scaler = inert_state(preprocessor, "_label_scaler")
        scaling = None
        if scaler is not None:
            scaling = _inverse_scaling(scaler)
        return classes, scaling
    except (InertPickleError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None, None


def _inverse_scaling(scaler: Inert) -> tuple[float, float]:
    """(scale, offset) that undo scikit-learn's StandardScaler or MinMaxScaler on one target."""

    def one(field: str) -> float | None:
        value = inert_state(scaler, field)
        if value is None:
            return None
        items = inert_array(value)
        if len(items) != 1:
            raise InertPickleError(f"{field} is not one value")
        return float(items[0])

    if scaler.name.endswith("StandardScaler"):  # inverse_transform: x * scale_ + mean_
        scale = one("scale_") if inert_state(scaler, "with_std") else None
        mean = one("mean_") if inert_state(scaler, "with_mean") else None
        return (1.0 if scale is None else scale), (0.0 if mean is None else mean)
    if scaler.name.endswith("MinMaxScaler"):
        scale, minimum = one("scale_"), one("min_")
        if scale is None or minimum is None or scale == 0:
            raise InertPickleError("MinMaxScaler without scale_/min_")
        return 1.0 / scale, -minimum / scale
    raise InertPickleError(f"scaler {scaler.name}")


def is_automm_predictor(folder: Path) -> bool:
    return (folder / ASSETS).is_file() and (folder / CONFIG).is_file()


def automm_root(folder: Path) -> Path | None:
    """The predictor folder: `folder` itself or its single top-level folder; None if neither is
    one (then it is not an AutoMM upload)."""
    if is_automm_predictor(folder):
        return folder
    children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("__MACOSX")]
    if len(children) == 1 and is_automm_predictor(children[0]):
        return children[0]
    return None


def _refuse(title: str, detail: str, field: str = "file") -> CheckpointError:
    return CheckpointError(title, f"AutoMM predictor: {detail}", field=field)


def _read_json(path: Path) -> dict[str, Any]:
    return _read_mapping(path, json.loads, (json.JSONDecodeError,), "JSON", "object")


def _read_yaml(path: Path) -> dict[str, Any]:
    return _read_mapping(path, yaml.safe_load, (yaml.YAMLError,), "YAML", "mapping")


def _read_mapping(
    path: Path,
    parse: Callable[[str], Any],
    parse_errors: tuple[type[Exception], ...],
    language: str,
    container: str,
) -> dict[str, Any]:
    try:
        raw = parse(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, *parse_errors) as exc:
        detail = f"{path.name} is not valid {language}: {exc}"
        raise _refuse("Invalid AutoMM predictor", detail) from None
    if not isinstance(raw, dict):
        raise _refuse("Invalid AutoMM predictor", f"{path.name} is not a {language} {container}")
    return raw


def _section(raw: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        value = raw.get(key) if isinstance(raw, Mapping) else None
        raw = value if isinstance(value, Mapping) else {}
    return raw


def read_predictor_folder(root: Path) -> AutoMMPredictorFolder:
    """Check assets.json, config.yaml and hf_text/ of a saved predictor (no weights yet)."""
    assets, config = _read_json(root / ASSETS), _read_yaml(root / CONFIG)
    problem_type = PROBLEM_TYPES.get(str(assets.get("problem_type")))
    if problem_type is None:
        raise _refuse(
            "Unsupported AutoMM predictor",
            f"problem type {assets.get('problem_type')!r}: only binary, multiclass and "
            "regression predictors are taken",
        )
    names = _section(config, "model").get("names")
    if names != [BACKBONE]:
        raise _refuse(
            "Unsupported AutoMM predictor",
            f"its models are {names}; only a predictor with the single text model "
            f"'{BACKBONE}' (model.names: [{BACKBONE}]) is taken",
        )
    hf_text = _section(config, "model", BACKBONE)
    pooling = hf_text.get("pooling_mode", "cls")
    if pooling not in POOLING_MODES:
        raise _refuse("Unsupported AutoMM predictor", f"hf_text pooling_mode {pooling!r}")
    if hf_text.get("insert_sep", True) is not True:
        raise _refuse("Unsupported AutoMM predictor", "hf_text insert_sep: false")
    if _section(config, "data", "text").get("normalize_text"):
        raise _refuse("Unsupported AutoMM predictor", "data.text.normalize_text: true")
    if _section(config, "data", "templates").get("turn_on"):
        raise _refuse("Unsupported AutoMM predictor", "data.templates.turn_on: true")
    classes, scaling = _preprocessor_facts(root)
    scaler = _section(config, "data", "label").get("numerical_preprocessing")
    if problem_type == "regression" and scaling is None:
        if scaler is not None:
            raise _refuse(
                "Unsupported AutoMM predictor",
                f"its regression targets were scaled (data.label.numerical_preprocessing: "
                f"{scaler}) and the scaler could not be read from df_preprocessor.pkl as inert "
                "data (it is never unpickled)",
            )
        scaling = (1.0, 0.0)

    column_types = assets.get("column_types")
    label_column = assets.get("label_column")
    if not isinstance(column_types, dict) or not isinstance(label_column, str):
        raise _refuse("Invalid AutoMM predictor", "assets.json has no column_types/label_column")
    features = {k: v for k, v in column_types.items() if k != label_column}
    text_columns = [name for name, kind in features.items() if kind == "text"]
    others = sorted(f"{name} ({kind})" for name, kind in features.items() if kind != "text")
    if others or not text_columns:
        raise _refuse(
            "Unsupported AutoMM predictor",
            "only text features are taken; it reads "
            + (", ".join(others) if others else "no text column"),
        )
    outputs = assets.get("output_shape")
    expected = 1 if problem_type == "regression" else None
    if not isinstance(outputs, int) or outputs < 1 or (expected and outputs != expected):
        raise _refuse("Invalid AutoMM predictor", f"assets.json output_shape {outputs!r}")

    backbone = root / BACKBONE
    if not (backbone / "config.json").is_file():
        raise _refuse("Invalid AutoMM predictor", f"{BACKBONE}/config.json is missing")
    if not any((backbone / name).is_file() for name in TOKENIZER_FILES):
        raise _refuse("Invalid AutoMM predictor", f"{BACKBONE}/ has no tokenizer vocabulary")
    check_config(backbone)
    max_len = hf_text.get("max_text_len")
    segments = hf_text.get("text_segment_num", 1)
    return AutoMMPredictorFolder(
        root=root,
        problem_type=problem_type,
        label_column=label_column,
        text_columns=text_columns,
        outputs=outputs,
        pooling=str(pooling),
        max_text_len=max_len if isinstance(max_len, int) and max_len > 0 else 512,
        segments=segments if isinstance(segments, int) and segments > 0 else 1,
        pos_label=_section(config, "data").get("pos_label"),
        version=str(assets.get("version", "")),
        classes=classes,
        scaling=scaling,
    )


def load_weights(root: Path) -> dict[str, torch.Tensor]:
    """model.ckpt's state_dict, tensors only (torch.load with weights_only=True), or refused."""
    path = root / WEIGHTS
    if not path.is_file():
        raise _refuse("Invalid AutoMM predictor", f"{WEIGHTS} (the weights) is missing")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": not worth a warning
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...: not tensors only
        # torch's message advises weights_only=False, which is exactly what is not done here.
        found = re.search(
            r"WeightsUnpickler error:(.*?)(Check the documentation|$)", str(exc), re.S
        )
        reason = " ".join(found.group(1).split())[:300] if found else ""
        raise _refuse(
            "Pickled weights refused",
            f"{WEIGHTS} is not tensors only: torch.load(weights_only=True) refused it "
            f"({reason or type(exc).__name__}); pickled code is never run here, so it is not "
            "read further",
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _refuse("Invalid AutoMM predictor", f"{WEIGHTS} holds no state_dict of tensors")
    return state


def build_classifier(folder: AutoMMPredictorFolder) -> PooledHeadClassifier:
    """The backbone from hf_text/config.json with model.ckpt's weights, and AutoMM's head."""
    pickled = sorted(
        p.relative_to(folder.root).as_posix()
        for p in (folder.root / BACKBONE).rglob("*")
        if p.suffix.lower() in PICKLED_SUFFIXES
    )
    if pickled:
        raise _refuse(
            "Pickled weights refused",
            f"{', '.join(pickled)}: pickled files where the backbone lives are not loaded",
        )
    state = load_weights(folder.root)
    config = AutoConfig.from_pretrained(
        str(folder.root / BACKBONE), local_files_only=True, trust_remote_code=False
    )
    encoder = AutoModel.from_config(config)
    backbone_state = {
        k.removeprefix(BACKBONE_PREFIX): v
        for k, v in state.items()
        if k.startswith(BACKBONE_PREFIX)
    }
    head_state = {
        k.removeprefix(HEAD_PREFIX): v for k, v in state.items() if k.startswith(HEAD_PREFIX)
    }
    others = sorted(
        set(state)
        - {*map(BACKBONE_PREFIX.__add__, backbone_state)}
        - {*map(HEAD_PREFIX.__add__, head_state)}
    )
    weight = head_state.get("weight")
    if others or weight is None or weight.shape != (folder.outputs, config.hidden_size):
        raise _refuse(
            "Invalid AutoMM predictor",
            f"{WEIGHTS} is not an hf_text model with a head of {folder.outputs} output(s) "
            f"(unexpected keys: {', '.join(others[:5]) or 'none'}; head weight "
            f"{tuple(weight.shape) if weight is not None else 'missing'})",
        )
    result = encoder.load_state_dict(backbone_state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise _refuse(
            "Invalid AutoMM predictor",
            f"{WEIGHTS} does not fit {BACKBONE}/config.json: missing "
            f"{', '.join(result.missing_keys[:5]) or 'none'}; unexpected "
            f"{', '.join(result.unexpected_keys[:5]) or 'none'}",
        )
    head = nn.Linear(config.hidden_size, folder.outputs, bias="bias" in head_state)
    head.load_state_dict(head_state)
    if folder.problem_type == "regression" and folder.scaling != (1.0, 0.0):
        # AutoMM predicts scaler.inverse_transform(head(x)): folded into the head's weights.
        scale, offset = folder.scaling or (1.0, 0.0)
        with torch.no_grad():
            head.weight.mul_(scale)
            if head.bias is None:
                head.bias = nn.Parameter(torch.zeros(folder.outputs))
            head.bias.mul_(scale).add_(offset)
    return PooledHeadClassifier(encoder.float().eval(), head.float(), folder.pooling)


def sorted_like_automm(classes: list[Any], pos_label: Any) -> list[Any]:
    """AutoMM's label encoder's order: scikit-learn's LabelEncoder sorts the classes (as
    values: 2 before 10); a `data.pos_label` is moved last."""
    ordered = sorted(classes)
    last = [c for c in ordered if pos_label is not None and str(c) == str(pos_label)]
    return [c for c in ordered if c not in last] + last


def automm_label_order(
    folder: AutoMMPredictorFolder, labels: list[str] | None
) -> tuple[list[str], str]:
    """Class names in output order, and where that order came from: df_preprocessor.pkl's
    label encoder read as inert data (checked against AutoMM's sorting rule, assets.json's
    output count and the request's names, if any), else the request's names sorted as
    AutoMM's label encoder sorts them."""
    if folder.problem_type == "regression":
        if labels:
            raise _refuse("Invalid labels", "a regression predictor has no classes", "labels")
        return [], "none (regression)"
    if labels is not None and len(set(labels)) != len(labels):
        raise _refuse("Invalid labels", "labels repeat a name", "labels")
    if folder.classes is not None:
        raw = folder.classes
        if len(raw) != folder.outputs or raw != sorted_like_automm(raw, folder.pos_label):
            raise _refuse(
                "Invalid AutoMM predictor",
                f"df_preprocessor.pkl's label encoder lists {raw[:20]}, which is not "
                f"{folder.outputs} classes in AutoMM's sorted order",
            )
        classes = [label_to_class_name(c) for c in raw]
        if len(set(classes)) != len(classes):
            raise _refuse("Invalid AutoMM predictor", "its classes repeat a name")
        if labels and sorted(labels) != sorted(classes):
            raise _refuse(
                "Label map mismatch",
                f"labels lists {', '.join(labels)} but the predictor's classes are "
                f"{', '.join(classes)}",
                "labels",
            )
        return classes, (
            "df_preprocessor.pkl's label encoder (classes_), read as inert data: never "
            "unpickled; it agrees with AutoMM's sorted order and assets.json's output_shape"
        )
    if not labels:
        raise _refuse(
            "Missing label map",
            "its class names could not be read from df_preprocessor.pkl as inert data (it is "
            "never unpickled); send them (predictor.class_labels), e.g. "
            "labels=entailment,not_entailment (in any order: AutoMM sorts them)",
            "labels",
        )
    if len(labels) != folder.outputs:
        raise _refuse(
            "Label map mismatch",
            f"labels lists {len(labels)} names but assets.json says the predictor has "
            f"{folder.outputs} outputs",
            "labels",
        )
    return sorted_like_automm(labels, folder.pos_label), (
        "the request's class names, in AutoMM's label-encoder order (sorted"
        + (", data.pos_label last)" if folder.pos_label else ")")
    )


def _check_text_columns(folder: AutoMMPredictorFolder, text_columns: list[str] | None) -> None:
    if text_columns and sorted(text_columns) != sorted(folder.text_columns):
        raise _refuse(
            "Text columns mismatch",
            f"text_columns lists {', '.join(text_columns)} but the predictor was fit on "
            f"{', '.join(folder.text_columns)}",
            "text_columns",
        )


def bundle_from_automm(
    root: Path,
    destination: Path,
    labels: list[str] | None,
    text_columns: list[str] | None,
    lineage: dict[str, Any],
) -> BundleMetadata:
    """Convert the predictor folder `root` into a new bundle folder `destination` (the
    backbone as a Hugging Face AutoModel checkpoint, the head beside it, the tokenizer and
    distillery.json); nothing of `root` is copied as it is. Returns the bundle's metadata."""
    folder = read_predictor_folder(root)
    _check_text_columns(folder, text_columns)
    label_names, label_order = automm_label_order(folder, labels)
    model = build_classifier(folder)
    tokenizer = load_tokenizer(root / BACKBONE)
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise _refuse("Unsupported AutoMM predictor", "its tokenizer has no [CLS]/[SEP] tokens")
    if label_names:
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {name: i for i, name in enumerate(label_names)}
    destination.mkdir(parents=True)
    model.encoder.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
    save_file(
        {k: v.contiguous() for k, v in model.head.state_dict().items()}, destination / HEAD_FILE
    )
    metadata = BundleMetadata(
        problem_type=folder.problem_type,
        labels=label_names,
        text_columns=folder.text_columns,
        max_text_len=folder.max_text_len,
        num_parameters=count_parameters(model),
        architecture=ARCHITECTURE,
        lineage={
            **lineage,
            "autogluon": {
                "format": "MultiModalPredictor.save (hf_text)",
                "version": folder.version,
                "label_column": folder.label_column,
                "label_order": label_order,
                "never_unpickled": sorted(p.name for p in root.glob("*.pkl")),
            },
        },
        head={"kind": "pooled", "pooling": folder.pooling, "file": HEAD_FILE},
        text_encoding={"packing": "columns", "segments": _segments(folder, model)},
    )
    write_metadata(destination, metadata)
    return metadata


def _segments(folder: AutoMMPredictorFolder, model: PooledHeadClassifier) -> int:
    """AutoMM's text_segment_num, capped by the backbone's type_vocab_size."""
    type_vocab = getattr(model.config, "type_vocab_size", 1) or 1
    return max(1, min(folder.segments, int(type_vocab)))


def load_pooled_classifier(
    folder: Path, metadata: BundleMetadata
) -> tuple[PooledHeadClassifier, PreTrainedTokenizerBase]:
    """A bundle converted from an AutoMM predictor, as a classifier and its tokenizer."""
    encoder = AutoModel.from_pretrained(
        str(folder), local_files_only=True, trust_remote_code=False, use_safetensors=True
    )
    head_state = load_file(str(folder / str(metadata.head.get("file", HEAD_FILE))))
    weight = head_state["weight"]
    head = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in head_state)
    head.load_state_dict(head_state)
    model = PooledHeadClassifier(encoder, head, str(metadata.head.get("pooling", "cls")))
    return model.eval(), load_tokenizer(folder)


def is_pooled_bundle(folder: Path) -> bool:
    """A bundle converted from an AutoMM predictor (downloaded, and now uploaded again)."""
    return (folder / HEAD_FILE).is_file() and (folder / METADATA_FILE).is_file()


def rebundle_pooled(
    root: Path, labels: list[str] | None, text_columns: list[str], lineage: dict[str, Any]
) -> BundleMetadata:
    """Check a converted AutoMM bundle uploaded again and keep its head and text packing (as a
    plain checkpoint it would get a fresh Hugging Face head); returns its new metadata."""
    check_files(root)
    try:
        metadata = read_metadata(root)
        model, _ = load_pooled_classifier(root, metadata)
    except Exception as exc:  # a bundle whose files do not load together
        raise CheckpointError("Unusable checkpoint", f"{HEAD_FILE} does not load: {exc}") from exc
    outputs = int(model.head.out_features)
    names = labels or metadata.labels
    if metadata.problem_type != "regression" and len(names) != outputs:
        raise CheckpointError(
            "Label map mismatch",
            f"labels lists {len(names)} names but the head has {outputs} outputs",
            field="labels",
        )
    metadata.labels, metadata.lineage = list(names), {**metadata.lineage, **lineage}
    if text_columns:
        metadata.text_columns = text_columns
    write_metadata(root, metadata)
    return metadata
