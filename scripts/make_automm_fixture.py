"""Make the AutoMM predictor fixtures in tests/fixtures/ with AutoGluon's own MultiModalPredictor.

Not run by CI (CI does not install AutoGluon). Run it by hand with a throwaway virtualenv
beside the project (see ../shared/automm/README.md):

    python3 -m venv ../automm-venv
    env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null ../automm-venv/bin/pip install \
        "torch==2.13.0" "torchvision==0.28.*" "autogluon.multimodal==1.6.3"
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ../automm-venv/bin/python scripts/make_automm_fixture.py

It builds a tiny BERT (2 layers, width 32) with a WordPiece vocabulary learnt from the rows, so
the saved predictors stay small; fits two predictors for one epoch on QNLI rows from
../shared/data/qnli/labeled.tsv:

- tests/fixtures/automm_teacher/: binary classification (question, sentence -> label), the
  default cls pooling;
- tests/fixtures/automm_teacher_regression/: regression on a made-up target (the sentence's
  share of the pair's words), mean pooling, the target standardized (AutoMM's default);

and writes tests/fixtures/automm_teacher_expected.json: the rows they were checked on, with
AutoMM's own predict_proba (classification, columns in `class_labels` order) and predict
(regression) outputs; and checks Distillery's text packing against AutoMM's own TextProcessor.
The predictor folders are committed as AutoMM wrote them, pickles
included: Distillery never unpickles them (tests plant and check exactly that); it reads the
class names and the target scaler from df_preprocessor.pkl as inert data.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
QNLI = ROOT.parent / "shared" / "data" / "qnli" / "labeled.tsv"
FIXTURES = ROOT / "tests" / "fixtures"
CLASSIFIER = FIXTURES / "automm_teacher"
REGRESSOR = FIXTURES / "automm_teacher_regression"
EXPECTED = FIXTURES / "automm_teacher_expected.json"
TRAIN_ROWS, TUNING_ROWS, CHECK_ROWS = 128, 32, 24
# Short enough that many QNLI pairs are truncated: the check rows exercise AutoMM's truncation.
MAX_TEXT_LEN = 40


def tiny_backbone(folder: Path, texts: list[str]) -> Path:
    """A randomly initialised 2-layer BERT with a small WordPiece vocabulary learnt from texts."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=600, min_frequency=2, show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    wordpiece.save_model(str(folder))  # vocab.txt
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(lines)}, do_lower_case=True)
    assert tokenizer.vocab_size == len(lines) > 100, tokenizer.vocab_size
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def fit(
    train: pd.DataFrame,
    tuning: pd.DataFrame,
    label: str,
    problem_type: str,
    backbone: Path,
    pooling: str,
    destination: Path,
):  # type: ignore[no-untyped-def]
    from autogluon.multimodal import MultiModalPredictor

    scratch = Path(tempfile.mkdtemp(prefix="automm-fit-"))
    predictor = MultiModalPredictor(
        label=label, problem_type=problem_type, path=str(scratch / "run"), verbosity=2
    )
    predictor.fit(
        train,
        tuning_data=tuning,
        seed=0,
        hyperparameters={
            "model.names": ["hf_text"],
            "model.hf_text.checkpoint_name": str(backbone),
            "model.hf_text.pooling_mode": pooling,
            "model.hf_text.max_text_len": MAX_TEXT_LEN,
            # The synonym step needs NLTK data that cannot be downloaded here.
            "model.hf_text.text_trivial_aug_maxscale": 0,
            "optim.max_epochs": 1,
            "optim.lr": 1e-3,
            "env.num_gpus": 0,
            "env.num_workers": 0,
            "env.num_workers_inference": 0,
            "env.per_gpu_batch_size": 16,
            "env.batch_size": 16,
        },
    )
    if destination.exists():
        shutil.rmtree(destination)
    predictor.save(str(destination))
    shutil.rmtree(scratch, ignore_errors=True)
    return MultiModalPredictor.load(str(destination))


def check_packing(predictor, rows: int = 300) -> None:  # type: ignore[no-untyped-def]
    """Distillery's per-column packing (distillery/encoding.py) gives the token and segment ids
    AutoMM's own TextProcessor gives, on 1, 2 and 3 random text columns and several lengths."""
    import random

    sys.path.insert(0, str(ROOT))
    from distillery.encoding import encode_columns

    processor = predictor._learner._data_processors["text"][0]
    tokenizer = processor.tokenizer
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha())[:200]
    rng = random.Random(0)
    for columns in (["a"], ["a", "b"], ["a", "b", "c"]):
        for _ in range(rows):
            row = {c: " ".join(rng.choices(words, k=rng.randint(0, 40))) for c in columns}
            for max_len in (8, 13, MAX_TEXT_LEN):
                processor.max_len = max_len
                want = processor.build_one_token_sequence_from_text(row, is_training=False)
                got = encode_columns(
                    tokenizer, [[row[c]] for c in columns], max_len, processor.text_segment_num
                )[0]
                assert list(want[processor.text_token_ids_key]) == got["input_ids"], row
                assert list(want[processor.text_segment_ids_key]) == got["token_type_ids"], row
    processor.max_len = MAX_TEXT_LEN


def main() -> None:
    frame = pd.read_csv(QNLI, sep="\t")[["question", "sentence", "label"]]
    train = frame.iloc[:TRAIN_ROWS].reset_index(drop=True)
    tuning = frame.iloc[TRAIN_ROWS : TRAIN_ROWS + TUNING_ROWS].reset_index(drop=True)
    check = frame.iloc[1000 : 1000 + CHECK_ROWS].reset_index(drop=True)
    backbone = tiny_backbone(
        Path(tempfile.mkdtemp(prefix="tiny-bert-")),
        [*frame["question"].iloc[:2000], *frame["sentence"].iloc[:2000]],
    )

    classifier = fit(train, tuning, "label", "binary", backbone, "cls", CLASSIFIER)
    rows = check[["question", "sentence"]]
    proba = classifier.predict_proba(rows, as_pandas=True)

    def share(part: pd.DataFrame) -> pd.DataFrame:
        words = part["sentence"].str.split().str.len()
        target = words / (words + part["question"].str.split().str.len())
        return part[["question", "sentence"]].assign(score=target.round(4))

    # AutoMM's default label preprocessing: the target standardized (the scaler is pickled).
    regressor = fit(share(train), share(tuning), "score", "regression", backbone, "mean", REGRESSOR)
    values = regressor.predict(rows, as_pandas=False)

    expected = {
        "made_by": "scripts/make_automm_fixture.py",
        "autogluon_multimodal": __import__("autogluon.multimodal").multimodal.__version__,
        "rows": rows.to_dict(orient="records"),
        "classification": {
            "folder": CLASSIFIER.name,
            "class_labels": [str(c) for c in classifier.class_labels],
            "predict_proba": proba[list(classifier.class_labels)].to_numpy().tolist(),
        },
        "regression": {
            "folder": REGRESSOR.name,
            "predict": [float(v) for v in values],
        },
    }
    EXPECTED.write_text(json.dumps(expected, indent=1) + "\n")
    check_packing(classifier)
    print(f"wrote {CLASSIFIER}, {REGRESSOR} and {EXPECTED}", file=sys.stderr)


if __name__ == "__main__":
    main()
