import io

import pandas as pd
import pytest

from distillery.tables import TableError, describe_table, format_from_filename, read_table

QNLI = pd.DataFrame(
    {
        "question": ["What is the capital of France?", "Who wrote Hamlet?", "When did it end?"],
        "sentence": ["Paris is the capital.", "Shakespeare wrote it.", "The war ended in 1945."],
        "label": ["entailment", "entailment", "not_entailment"],
    }
)


def encode(frame: pd.DataFrame, table_format: str) -> bytes:
    if table_format == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    if table_format == "jsonl":
        return frame.to_json(orient="records", lines=True).encode()
    return frame.to_csv(index=False, sep="\t" if table_format == "tsv" else ",").encode()


@pytest.mark.parametrize("table_format", ["csv", "tsv", "jsonl", "parquet"])
def test_every_format_reads_the_same_table(table_format: str) -> None:
    frame = read_table(encode(QNLI, table_format), table_format)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(frame, QNLI)
    schema = describe_table(frame)
    assert schema.text_columns == ["question", "sentence"]
    assert schema.label_column == "label"
    assert schema.problem_type == "binary"
    assert schema.label_counts == {"entailment": 2, "not_entailment": 1}


def test_problem_types() -> None:
    text = ["a long enough sentence"] * 30
    assert describe_table(pd.DataFrame({"t": text, "label": [0, 1, 2] * 10})).problem_type == (
        "multiclass"
    )
    scores = [i / 7 for i in range(30)]
    assert describe_table(pd.DataFrame({"t": text, "label": scores})).problem_type == "regression"


def test_missing_label_column_names_the_columns() -> None:
    with pytest.raises(TableError) as error:
        describe_table(QNLI, label_column="lable")
    assert error.value.field == "label"
    assert "columns are: question, sentence, label" in str(error.value)


def test_mixed_label_types_are_refused() -> None:
    frame = pd.DataFrame({"t": ["some text here"] * 4, "label": [1, "yes", 0, "no"]})
    with pytest.raises(TableError, match="mixes value types"):
        describe_table(frame)


@pytest.mark.parametrize(
    ("content", "table_format", "message"),
    [
        (b"", "csv", "empty"),
        (b"question,label\n", "csv", "no rows"),
        (b"\xff\xfe\x00junk\x00\x01", "csv", "UTF-8"),
        (b"not json at all\n", "jsonl", "could not read"),
        (b"PAR1 not really parquet", "parquet", "could not read"),
    ],
)
def test_unreadable_files(content: bytes, table_format: str, message: str) -> None:
    with pytest.raises(TableError, match=message):
        read_table(content, table_format)  # type: ignore[arg-type]


def test_unknown_suffix() -> None:
    with pytest.raises(TableError, match=r"unsupported file type '\.xlsx'"):
        format_from_filename("data.xlsx")
