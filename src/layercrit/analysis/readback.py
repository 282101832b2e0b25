"""Reading a study's results back for its tables: every file must prove it is what the workflow wrote.

The tables are where every result meets every other, so a hand-edited, foreign or stale number
must stop there, with its path and the command that makes it again, instead of becoming part of
a mean. A file is accepted if

- it matches its schema (``workflow/schemas/reset_result.schema.yaml``, ``baseline.schema.yaml``):
  keys, types and ranges (a criticality lies in [0, 100], a cosine of softmax outputs in [0, 1]);
- it agrees with itself: a result's criticality is 100 × (1 − its cosine), its recovered accuracy
  its top-1 over the clean top-1, it counts no more non-finite images than it has, and its means
  are NaN exactly when it counts a non-finite image (``self_contradictions``);
- it is what its path says: the model, layer, seed and mode a result records are its path's;
- it belongs to its model's baseline: computed from the checkpoint, evaluation data and clean
  logits the baseline recorded (sha256), on as many images, against the same clean accuracy;
- the baseline belongs to the files now on disk: their sha256 is what it recorded, and its
  accuracy is what its logits give on the evaluation labels (which must be classes of the model);
- a checkpoint the study trains here was written by a training, not fetched (the zoo's recorded
  checkpoint, fetched before training.retrain was set);
- the evaluation-data files of the baselines (one per input pipeline, data.pipeline per_model)
  hold the same images, labels and order, made from one listing of the image folder.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from layercrit.evaluation.baseline_checks import BASELINE_INPUTS, recompute_command, summary_contradictions
from layercrit.evaluation.metrics import PER_IMAGE_METRICS, clean_accuracy, criticality, next_token_accuracy
from layercrit.io import DamagedFileError, file_sha256, read_json
from layercrit.study import load_schema, reset_result_identity, schema_problems, schema_validator

# A recomputed float against one read back from JSON (written with repr: exact, so this only
# allows for a recomputation in another order).
TOLERANCE = 1e-9


@functools.lru_cache(maxsize=None)
def _validator(name: str) -> Any:
    return schema_validator(load_schema(name))


def _checked_json(path: str | Path, schema: str, what: str) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DamagedFileError(path, f"it holds a JSON {type(data).__name__}, not a {what}")
    problems = schema_problems(data, _validator(schema), what)
    if problems:
        raise DamagedFileError(path, "; ".join(problems))
    return data


def _same(a: float, b: float) -> bool:
    """Equal up to TOLERANCE, NaN equal to NaN (a non-finite evaluation is NaN on both sides)."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=0.0, abs_tol=TOLERANCE)


def read_reset_result(path: str | Path) -> dict[str, Any]:
    """One reset result, checked against its schema, itself and its path."""
    result = _checked_json(path, "reset_result", "reset result")
    expected = reset_result_identity(path)
    recorded = {key: result[key] for key in expected}
    if recorded != expected:
        raise ValueError(
            f"{path} records {recorded} but its path says {expected}: it was not written there by its reset "
            f"job. Delete it and run the workflow again to recompute it."
        )
    if not _same(result["criticality"], criticality(result["cosine"])):
        raise DamagedFileError(
            path,
            f"its criticality {result['criticality']!r} is not 100 × (1 − its cosine {result['cosine']!r}) "
            f"= {criticality(result['cosine'])!r}",
        )
    problems = self_contradictions(result)
    if problems:
        raise DamagedFileError(path, "it contradicts itself: " + "; ".join(problems))
    return result


# The means over images of a result (metrics.OutputChangeAccumulator): one image with non-finite
# clean or reset outputs makes each of them NaN, and none leaves them finite.
IMAGE_MEANS = ("criticality", *PER_IMAGE_METRICS)


def self_contradictions(result: Mapping[str, Any]) -> list[str]:
    """What a (schema-valid) reset result says against itself, one phrase per contradiction naming
    its fields; none for a result as ``metrics.OutputChangeAccumulator`` writes it. The schema
    checks each field alone (ranges); these are the relations between fields. Fields that older
    results lack are not checked."""
    problems = []
    n_images = result["n_images"]
    counts = {key: result[key] for key in ("n_nonfinite", "n_nonfinite_clean", "n_nonfinite_reset") if key in result}
    problems += [f"{key} {count} of {n_images} images" for key, count in counts.items() if count > n_images]
    if len(counts) == 3:
        clean, reset = counts["n_nonfinite_clean"], counts["n_nonfinite_reset"]
        if not max(clean, reset) <= counts["n_nonfinite"] <= clean + reset:
            problems.append(
                f"n_nonfinite {counts['n_nonfinite']} is not between the larger of n_nonfinite_clean {clean} and "
                f"n_nonfinite_reset {reset} and their sum"
            )
    means = [key for key in IMAGE_MEANS if key in result]
    bad = "NaN" if result["n_nonfinite"] == 0 else "finite"
    wrong = [key for key in means if math.isnan(result[key]) == (bad == "NaN")]
    if wrong:
        problems.append(f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} {bad} with n_nonfinite {result['n_nonfinite']}")
    if "n_nonfinite_reset" in result:  # the reset model's accuracy is NaN where any of its outputs is not finite
        reset = result["n_nonfinite_reset"]
        accuracies = [key for key in ("top1", "top5") if key in result]
        wrong = [key for key in accuracies if math.isnan(result[key]) == (reset == 0)]
        if wrong:
            state = "NaN" if reset == 0 else "finite"
            problems.append(f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} {state} with n_nonfinite_reset {reset}")
    if "recovered_acc" in result:
        top1, original = result["top1"], result["original_top1"]
        expected = top1 / original if original > 0 else math.nan
        if not _same(result["recovered_acc"], expected):
            problems.append(f"recovered_acc {result['recovered_acc']!r} is not top1 {top1!r} / original_top1 {original!r} = {expected!r}")
    return problems


def read_reset_results(result_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per reset result file, each checked (``read_reset_result``)."""
    return pd.DataFrame([read_reset_result(path) for path in result_files])


def read_baselines(baseline_files: Iterable[str | Path]) -> tuple[dict[str, dict], dict[str, str]]:
    """Baseline summaries (clean top-1/top-5 per model), schema-checked, and their files, keyed by model id."""
    summaries, files = {}, {}
    for path in baseline_files:
        summary = _checked_json(path, "baseline", "baseline summary")
        summaries[summary["model"]], files[summary["model"]] = summary, str(path)
    return summaries, files


def check_against_baselines(resets: pd.DataFrame, baselines: dict[str, dict], baseline_files: dict[str, str]) -> None:
    """Every result must have been computed from the files its model's baseline evaluated (the
    ``*_sha256`` fields both record), on as many images and against the same clean top-1;
    otherwise it compares a reset with another model. ``baseline_files`` maps model ids to their
    baseline summaries (named in the message: recomputing one recomputes its model's results)."""
    hashes = [c for c in resets.columns if c.endswith("_sha256")]
    if not hashes:
        raise ValueError(
            "the reset results do not record the checkpoint, evaluation data and baseline logits they were "
            "computed from (made by an older version of this workflow); recompute them: snakemake --forcerun baseline"
        )
    for model, rows in resets.groupby("model", sort=False):
        baseline = baselines[model]
        for column in hashes:
            stale = rows[rows[column] != baseline.get(column)]
            if len(stale):
                first = stale.iloc[0]
                raise ValueError(
                    f"{len(stale)} reset result(s) of {model!r} (e.g. layer {first['layer']}, seed {first['seed']}) were "
                    f"computed from another {column.removesuffix('_sha256')} than its current baseline "
                    f"({first[column]!s:.16} vs {baseline.get(column)!s:.16}); recompute the model's results: "
                    f"snakemake --forcerun {baseline_files[model]}"
                )
        for column, key in (("original_top1", "top1"), ("n_images", "n_images")):
            if column not in rows:
                continue
            differs = rows[[not _same(float(v), float(baseline[key])) for v in rows[column]]]
            if len(differs):
                first = differs.iloc[0]
                raise ValueError(
                    f"{len(differs)} reset result(s) of {model!r} (e.g. layer {first['layer']}, seed {first['seed']}) "
                    f"record {column} {first[column]!r}, but the baseline {baseline_files[model]} says {key} "
                    f"{baseline[key]!r}: one of them was edited or written by another run. Recompute the model: "
                    f"snakemake --forcerun {baseline_files[model]}"
                )


def check_seed_scheme(resets: pd.DataFrame, scheme: str) -> None:
    """Every randomize result must have drawn its fresh model under the study's seed scheme
    (reset.seed_scheme; a result that records none predates the schemes: ``independent``):
    a table that mixed schemes would mix trials that pair with the published ones and draws
    that do not."""
    if resets.empty:
        return
    recorded = resets.get("seed_scheme", pd.Series(None, index=resets.index)).fillna("independent")
    other = resets[(resets["mode"] == "randomize") & (recorded != scheme)]
    if len(other):
        first = other.iloc[0]
        raise ValueError(
            f"{len(other)} randomize result(s) (e.g. {first['model']} {first['layer']} seed {first['seed']}) were drawn "
            f"under seed scheme {recorded[first.name]!r}, but the study says reset.seed_scheme: {scheme!r}. "
            "Recompute them: snakemake --forcerun reset (or set reset.seed_scheme back)"
        )


def check_baseline_files(
    baselines: dict[str, dict], baseline_files: dict[str, str], files: Mapping[str, Mapping[str, str]]
) -> None:
    """Each baseline against the files on disk: ``files`` maps a model to the paths of its
    ``BASELINE_INPUTS``. Their sha256 must be what the baseline recorded (a file replaced with its
    old modification time is invisible to Snakemake), and its accuracy what its logits give."""
    from layercrit.data import check_labels, load_labels
    from layercrit.io import read_safetensors

    paths = sorted({str(p) for model in baselines for p in files[model].values()})
    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL
        digests = dict(zip(paths, pool.map(file_sha256, paths)))
    changed: dict[tuple[str, str], list[str]] = {}
    for model, baseline in baselines.items():
        for name in BASELINE_INPUTS:
            path = str(files[model][name])
            if digests[path] != baseline[f"{name}_sha256"]:
                changed.setdefault((name, path), []).append(model)
    if changed:
        (name, path), models = next(iter(changed.items()))
        redo = recompute_command(name, baseline_files[models[0]], models[0])
        raise ValueError(
            f"{path} is not the {name.replace('_', ' ')} that the baseline(s) of {models} evaluated (its sha256 "
            f"differs from the one they recorded): it was replaced after they ran, so their results are not "
            f"this file's. Recompute: {redo}"
        )
    labels = {}
    for model, baseline in baselines.items():
        eval_path, logits_path = str(files[model]["eval_data"]), str(files[model]["logits"])
        if baseline.get("data_kind") == "text":  # a language model's next-token record
            record = read_safetensors(logits_path, names=("target_logprob", "top1_hit", "top5_hit"))[0]
            if wrong := summary_contradictions(baseline, next_token_accuracy(record)):
                raise DamagedFileError(
                    baseline_files[model],
                    f"it records {', '.join(f'{k} {r!r}' for k, (r, _) in wrong.items())}, but its next-token record "
                    f"{logits_path} gives {', '.join(f'{k} {v!r}' for k, (_, v) in wrong.items())}",
                )
            continue
        if eval_path not in labels:
            labels[eval_path] = load_labels(eval_path)
        logits = read_safetensors(logits_path, names=("logits",))[0]["logits"]
        check_labels(labels[eval_path], logits.shape[1], eval_path)
        wrong = summary_contradictions(baseline, clean_accuracy(logits, labels[eval_path]))
        if wrong:
            raise DamagedFileError(
                baseline_files[model],
                f"it records {', '.join(f'{k} {r!r}' for k, (r, _) in wrong.items())}, but its logits {logits_path} "
                f"give {', '.join(f'{k} {v!r}' for k, (_, v) in wrong.items())} on {eval_path}",
            )


# What every evaluation-data file of a study must share: the images (by path, in order), their
# classes and the listing of the folder they were chosen from (data jobs record it since issue 30).
SHARED_IMAGE_FACTS = ("files", "classes", "n_total", "listing_sha256")


def check_one_image_set(eval_files: Iterable[str | Path]) -> None:
    """The evaluation-data files of a study (with per-model pipelines, one per pipeline) must hold
    the same images, labels and order: a table that mixed them would compare models on other
    images. Each is checked against the first; the message names both and how to make them from
    one listing of the folder."""
    from layercrit.data import load_labels
    from layercrit.imagenet.prepare import read_metadata

    paths = sorted({str(p) for p in eval_files})
    if len(paths) < 2:
        return
    if _text_windows(paths[0]) is not None:
        check_one_text(paths)
        return
    first, first_labels = read_metadata(paths[0]), load_labels(paths[0])
    for path in paths[1:]:
        other = read_metadata(path)
        differ = [key for key in SHARED_IMAGE_FACTS if key in first and key in other and first[key] != other[key]]
        labels = load_labels(path)
        if len(labels) != len(first_labels) or bool((labels != first_labels).any()):
            differ.append("labels")
        if differ:
            counts = f"{first.get('n_images', len(first_labels))} and {other.get('n_images', len(labels))} images"
            raise ValueError(
                f"{paths[0]} and {path} hold other images ({counts}; they differ in {', '.join(differ)}): each "
                "input pipeline's file must hold the same images, labels and order, or the tables would compare "
                "models on different images. Prepare them all again from the image folder as it is now: "
                "snakemake --forcerun pipeline_images  (then every baseline and reset is computed again)"
            )


# What the token files of a text study's tokenizers must share: the same text, documents order and windows.
SHARED_TEXT_FACTS = ("path", "seed", "windows", "window_tokens", "documents", "order_head")


def _text_windows(path: str | Path) -> dict[str, Any] | None:
    from layercrit.io import safetensors_metadata

    record = (safetensors_metadata(path) or {}).get("text_windows")
    return json.loads(record) if record else None


def check_one_text(paths: list[str]) -> None:
    """The token files of a text study (one per tokenizer) must be made from the same text, in
    the same seeded order of documents, with the same windows (their token ids differ)."""
    first = _text_windows(paths[0])
    for path in paths[1:]:
        other = _text_windows(path) or {}
        differ = [key for key in SHARED_TEXT_FACTS if first.get(key) != other.get(key)]
        if differ:
            raise ValueError(
                f"{paths[0]} and {path} were made from other text or settings (they differ in {', '.join(differ)}): the "
                "tables would compare models on different text. Make them again: snakemake --forcerun text_tokens"
            )


def read_training_records(paths: Iterable[str | Path]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The training records (``models/<model>.training.json``) of the models a study trains here,
    by model id, each with its path."""
    records = {}
    for path in paths:
        record = read_json(path)
        if not isinstance(record, dict) or not isinstance(record.get("model"), str):
            raise DamagedFileError(path, "it is not a training record (a JSON object naming its model)")
        records[record["model"]] = (str(path), record)
    return records


def check_trained_checkpoints(records: Mapping[str, tuple[str, Mapping[str, Any]]], checkpoints: Mapping[str, str | Path]) -> None:
    """Each model the study trains here (``records``: its training record) must have a checkpoint
    that a training wrote (its header says ``weights: trained``), not one fetched (the zoo's
    recorded checkpoint, before training.retrain was set): its results would be called those of
    a model trained here."""
    from layercrit.weights.checkpoint_files import recorded_metadata

    for model, (record_path, _) in records.items():
        path = checkpoints[model]
        header = recorded_metadata(Path(path), model_id=model) or {}
        if header.get("weights") != "trained":
            raise ValueError(
                f"{path} was fetched (source kind {header.get('source', {}).get('kind', '?')!r}), not trained here, but the "
                f"study trains {model!r} here (training.retrain; its training record: {record_path}), so its results "
                f"would not be of the model trained here. Train it, with its baseline and results: "
                f"snakemake --forcerun {path}"
            )
