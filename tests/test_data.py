import pandas as pd
import pytest

from lorabench.config import DataConfig
from lorabench.data import build_texts, load_splits
from lorabench.errors import DataError


def test_study_split_on_bundled_data():
    s = load_splits(DataConfig())
    assert (len(s.train), len(s.val), len(s.test)) == (6090, 1523, 3263)
    assert s.train.ids[0] == "5285" and s.train.texts[0].startswith("my worst fear.")
    assert s.train.class_counts(2) == [3470, 2620]
    assert s.class_weights == pytest.approx([0.877521613832853, 1.1622137404580153], abs=1e-15)
    assert not s.test.labelled
    assert s.label_names == ["not_disaster", "disaster"]


def test_study_weights_reproduced_with_explicit_list():
    s = load_splits(DataConfig(class_weights=[0.8766697374481806, 1.1637114032405993]))
    assert s.class_weights == [0.8766697374481806, 1.1637114032405993]
    assert load_splits(DataConfig(class_weights="none")).class_weights is None


def test_template_fills_missing_values_with_empty_strings():
    df = pd.DataFrame({"keyword": ["fire", None], "text": ["a", "b"]})
    assert build_texts(df, "{keyword} | {text}", "x") == ["fire | a", " | b"]


def test_string_labels_multiclass_and_labelled_test(tmp_path):
    rows = [{"id": i, "text": f"row {i} " + ["cat", "dog", "fish"][i % 3], "label": ["cat", "dog", "fish"][i % 3]}
            for i in range(60)]
    pd.DataFrame(rows).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    pd.DataFrame(rows[:9]).to_parquet(tmp_path / "test.parquet")
    s = load_splits(DataConfig(source=str(tmp_path / "train.jsonl"), label="label",
                               test=str(tmp_path / "test.parquet")))
    assert s.label_names == ["cat", "dog", "fish"]
    assert len(s.train) + len(s.val) == 60 and len(s.test) == 9 and s.test.labelled
    assert s.test.labels == [0, 1, 2] * 3
    assert s.class_weights == pytest.approx([len(s.train) / (3 * c) for c in s.train.class_counts(3)])


def test_save_to_disk_folder_and_explicit_val(tmp_path):
    import datasets
    ds = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(20)], "target": [i % 2 for i in range(20)]})
    ds.save_to_disk(str(tmp_path / "ds"))
    pd.DataFrame({"text": ["a", "b"], "target": [0, 1]}).to_csv(tmp_path / "val.csv", index=False)
    s = load_splits(DataConfig(source=str(tmp_path / "ds"), val=str(tmp_path / "val.csv")))
    assert (len(s.train), len(s.val)) == (20, 2)


def test_subsample_is_seeded():
    a = load_splits(DataConfig(max_train_samples=100, max_eval_samples=50))
    b = load_splits(DataConfig(max_train_samples=100, max_eval_samples=50))
    assert a.train.texts == b.train.texts and len(a.train) == 100 and len(a.val) == 50
    assert a.fingerprint == b.fingerprint != load_splits(DataConfig(max_train_samples=100, sample_seed=1)).fingerprint


@pytest.mark.parametrize("frame,match", [
    (pd.DataFrame({"text": [], "target": []}), "no rows"),
    (pd.DataFrame({"text": ["a", "b", "c"], "target": [1, 1, 1]}), "single class"),
    (pd.DataFrame({"text": ["a", "b", "c"], "target": [1, None, 0]}), "empty value"),
    (pd.DataFrame({"body": ["a", "b"], "target": [1, 0]}), "no column 'text'"),
    (pd.DataFrame({"text": ["a", "b"], "y": [1, 0]}), "no label column 'target'"),
])
def test_bad_data_errors(tmp_path, frame, match):
    p = tmp_path / "d.csv"
    frame.to_csv(p, index=False)
    with pytest.raises(DataError, match=match):
        load_splits(DataConfig(source=str(p)))


def test_missing_file():
    with pytest.raises(DataError, match="not found"):
        load_splits(DataConfig(source="/nonexistent/x.csv"))


# ------------------------------------------------------------------- issue 22: a row with more fields than the header
@pytest.mark.parametrize("text, line, n, more", [
    ("id,text\n0001,fire, smoke and flames\n0002,happy music\n", 2, 3, "more"),   # one unquoted comma
    ("id,text\n0001,fire\n0002,happy music, love and summer\n", 3, 3, "more"),    # only a later row
    ("id,text,target\nu1,flames,1\nu2,happy\n", 3, 2, "fewer"),                  # a field missing
    ('id,text\n0001,"a quoted, comma"\n0002,fire, smoke\n', 3, 3, "more"),        # quoted is fine, the next is not
])
def test_a_row_whose_field_count_differs_from_the_header_is_one_error_naming_the_line(tmp_path, text, line, n, more):
    from lorabench.data.sources import read_table
    p = tmp_path / "rows.csv"
    p.write_text(text)
    match = (rf"rows\.csv: line {line} has {n} fields, more than the header's \d; a text holding the delimiter "
             r"\(','\) must be quoted, e.g. \"fire, smoke and flames\"") if more == "more" else \
        rf"rows\.csv: line {line} has {n} fields, fewer than the header's \d; every row needs a value"
    with pytest.raises(DataError, match=match):
        read_table(p)


def test_the_same_holds_for_tabs_and_semicolons(tmp_path):
    from lorabench.data.sources import read_table
    (tmp_path / "t.tsv").write_text("id\ttext\n1\tfire\tsmoke\n")
    with pytest.raises(DataError, match=r"line 2 has 3 fields.*\(tab\)"):
        read_table(tmp_path / "t.tsv")
    (tmp_path / "s.csv").write_text("id;text;target\n1;fire;1\n2;happy; music;0\n")
    with pytest.raises(DataError, match=r"line 3 has 4 fields.*\(';'\)"):
        read_table(tmp_path / "s.csv", delimiter=";")


def test_a_trailing_delimiter_on_every_row_is_accepted_and_said(tmp_path):
    from lorabench.data.sources import read_table
    from lorabench.errors import LorabenchWarning
    (tmp_path / "t.csv").write_text("id,text,target\n0001,fire,1,\n0002,happy,0,\n")
    with pytest.warns(LorabenchWarning, match="one more, empty field"):
        frame = read_table(tmp_path / "t.csv")
    assert frame.to_dict("list") == {"id": ["0001", "0002"], "text": ["fire", "happy"], "target": ["1", "0"]}
    (tmp_path / "u.csv").write_text("id,text,target\n0001,fire,1,\n0002,happy,0,x\n")  # not empty everywhere
    with pytest.raises(DataError, match="line 2 has 4 fields"):
        read_table(tmp_path / "u.csv")


def test_predict_and_train_never_take_ids_from_the_text(tmp_path, capsys):
    from lorabench.cli import main
    rows = pd.DataFrame({"id": [f"{i:04d}" for i in range(40)], "text": ["fire smoke", "happy music"] * 20,
                         "target": [1, 0] * 20})
    rows.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "c.yaml").write_text("name: c\ndata: {source: train.csv}\nmodel: {name: tfidf-logreg}\n")
    assert main(["train", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "run")]) == 0
    (tmp_path / "new.csv").write_text("id,text\n0001,fire, smoke and flames near the river\n0002,happy music\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "--input", str(tmp_path / "new.csv"),
                 "--output", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lorabench: error: {tmp_path / 'new.csv'}: line 2 has 3 fields, more than the header's 2; a text "
                   "holding the delimiter (',') must be quoted, e.g. \"fire, smoke and flames\""]
    assert not (tmp_path / "p.csv").exists()
    (tmp_path / "bad.csv").write_text("id,text,target\nu0,explosion, flames,1\nu1,happy,0\n")
    assert main(["train", str(tmp_path / "c.yaml"), "--set", "data.source=bad.csv", "--output-dir",
                 str(tmp_path / "run2")]) == 2
    assert "bad.csv: line 2 has 4 fields" in capsys.readouterr().err
