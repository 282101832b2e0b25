"""Issue 34: a folder saved by the ``datasets`` library (``save_to_disk``) as the text of a
language-model study: checked at parse time from its JSON files, read by the token job, one
document per row. The folders are made here with ``datasets.Dataset.from_dict``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_snakemake
from support.hub import hosts, layer_command  # noqa: F401 (hosts: a fixture)
from test_language_models import documents, one_lm_zoo, text_config, write_text


def save_rows(folder: Path, rows: list[str], splits: tuple[str, ...] = (), **columns) -> Path:
    """``rows`` (column ``text``, and ``columns``) saved with save_to_disk: as one Dataset, or
    as a DatasetDict with the same rows in each of ``splits``."""
    from datasets import Dataset, DatasetDict

    dataset = Dataset.from_dict({"text": rows, **columns})
    (DatasetDict({split: dataset for split in splits}) if splits else dataset).save_to_disk(str(folder))
    return folder


def wikitext_like(docs: list[str]) -> list[str]:
    """WikiText's layout: rows are lines, an empty row before and after each heading."""
    rows = []
    for number, doc in enumerate(docs):
        if number % 4 == 0:
            rows += ["", f" = Section {number} = \n", ""]
        rows.append(f" {doc} \n")
    return rows


def parse_problem(config: dict) -> str:
    from layercrit.study import ConfigError
    from layercrit.study.workflow import load_workflow_study

    with pytest.raises(ConfigError) as e:
        load_workflow_study(config, [], Path(__file__).parents[1])
    return str(e.value)


def test_a_saved_dataset_that_cannot_give_the_text_stops_at_parse_time_naming_what_it_has(hosts, tmp_path):
    zoo, _, _ = one_lm_zoo(hosts, tmp_path)
    layer_command(zoo, "lm", tmp_path)
    rows = documents(60, 3)
    splits = save_rows(tmp_path / "wiki", rows, splits=("test", "train"), title=[f"t{i}" for i in range(60)], n=list(range(60)))
    single = save_rows(tmp_path / "single", rows)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/notes.txt").write_text("x" * 5000)

    def problem(path: Path, **data) -> str:
        return parse_problem(text_config(tmp_path, zoo, path, **data))

    assert "is a folder but not a saved dataset" in problem(tmp_path / "plain")
    assert "save_to_disk" in problem(tmp_path / "plain")
    assert "is a DatasetDict with splits ['test', 'train']; choose one with data.split" in problem(splits)
    assert "data.split: 'valid' is not a split of" in problem(splits, split="valid") and "its splits are ['test', 'train']" in problem(splits, split="valid")
    assert "data.column: 'body' is not a column of" in problem(splits, split="test", column="body")
    assert "its columns are ['n', 'text', 'title']" in problem(splits, split="test", column="body")
    assert "data.column: 'n' of" in problem(splits, split="test", column="n") and "its string columns are ['text', 'title']" in problem(splits, split="test", column="n")
    assert "holds one Dataset, with no splits; leave data.split out" in problem(single, split="test")
    assert "too few for data.windows x data.window_tokens = 100 x 128" in problem(single, windows=100, window_tokens=128)
    text = write_text(tmp_path / "docs.txt", rows)
    assert "is a file, with no splits" in problem(text, split="test")
    # what passes: a split and a string column of it; one Dataset without a split
    from layercrit.study.workflow import load_workflow_study

    for config in (text_config(tmp_path, zoo, splits, split="test", column="title", windows=2, window_tokens=8),
                   text_config(tmp_path, zoo, single)):  # fmt: skip
        assert load_workflow_study(config, [], Path(__file__).parents[1]).study.architectures


@pytest.mark.slow
def test_the_token_job_reads_a_saved_split_one_document_per_row_as_the_same_rows_in_jsonl(hosts, tmp_path):
    """The token file of a DatasetDict's split equals that of a .jsonl file of its non-empty
    rows (same seeded order, same tokens), and records the split, the column and datasets'
    fingerprint of the data; another split's rows make other tokens."""
    from layercrit.text_windows import read_token_windows

    zoo, _, _ = one_lm_zoo(hosts, tmp_path)
    layer_command(zoo, "lm", tmp_path)
    test_rows, train_rows = wikitext_like(documents(80, 5)), wikitext_like(documents(80, 6))
    from datasets import Dataset, DatasetDict

    DatasetDict({"test": Dataset.from_dict({"text": test_rows}), "train": Dataset.from_dict({"text": train_rows})}).save_to_disk(str(tmp_path / "data/wiki"))
    jsonl = tmp_path / "data/wiki.jsonl"
    jsonl.write_text("".join(json.dumps({"text": row}) + "\n" for row in test_rows if row.strip()))

    from layercrit.study.text_data import token_file
    from layercrit.study.workflow import load_workflow_study

    tokens = {}
    for name, data in {"test": {"path": "data/wiki", "split": "test"}, "train": {"path": "data/wiki", "split": "train"}, "jsonl": {"path": "data/wiki.jsonl"}}.items():
        config = text_config(tmp_path, zoo, tmp_path / data.pop("path"), windows=6, window_tokens=32, **data)
        config |= {"study": f"lm_{name}", "downloads": str(tmp_path / "downloads")}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        (arch,) = load_workflow_study(config, [], Path(__file__).parents[1]).study.architectures.values()
        target = f"results/lm_{name}/{token_file(arch)}"
        run_snakemake(tmp_path, "--configfile", str(tmp_path / f"{name}.yaml"), "--cores", "1", target)
        tokens[name] = read_token_windows(tmp_path / target)

    (test, record), (jsonl_tokens, jsonl_record) = tokens["test"], tokens["jsonl"]
    assert test.shape == (6, 32) and test.equal(jsonl_tokens) and not test.equal(tokens["train"][0])
    assert record["documents"] == jsonl_record["documents"] == sum(1 for row in test_rows if row.strip())
    assert (record["split"], record["column"], jsonl_record["split"]) == ("test", "text", None)
    state = json.loads((tmp_path / "data/wiki/test/state.json").read_text())
    assert record["dataset_fingerprint"] == state["_fingerprint"] and jsonl_record["dataset_fingerprint"] is None
