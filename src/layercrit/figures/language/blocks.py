"""A language model's layers as blocks × sublayer kinds: ``model.layers.3.mlp.down_proj`` is
block 3's ``mlp.down_proj``; the embeddings, the final norm and ``lm_head`` lie outside the
blocks. Read from the heatmaps' labels (``layer_label``: "[3] mlp.down_proj"), so that a kind is
named as the heatmaps' columns name it, for every family (GPT-NeoX's ``attn.query_key_value``,
Llama's and Qwen2's ``self_attn.q_proj``), and a new family needs no table here."""

from __future__ import annotations

import math
import re

import pandas as pd

from layercrit.figures.heatmaps.panels import layer_table

_IN_BLOCK = re.compile(r"^\[(\d+)\] (.+)$")  # one block index: a transformer's decoder layer


def block_layout(summary: pd.DataFrame) -> pd.DataFrame:
    """The layers of ``summary`` (one model's, or models of one layer list) in ``layer_index``
    order with their ``label``, ``block`` (the block index; -1 outside the blocks) and ``kind``
    (the sublayer's name within its block; outside the blocks the whole label)."""
    layers = layer_table(summary)
    found = [_IN_BLOCK.match(label) for label in layers["label"]]
    layers["block"] = [int(m[1]) if m else -1 for m in found]
    layers["kind"] = [m[2] if m else label for m, label in zip(found, layers["label"])]
    return layers


def sublayer_kinds(layout: pd.DataFrame) -> list[str]:
    """The kinds of sublayer inside the blocks, in the order they first come in the model."""
    return list(dict.fromkeys(layout.loc[layout["block"] >= 0, "kind"]))


def block_matrix(summary: pd.DataFrame, value: str = "criticality_mean") -> tuple[pd.DataFrame, pd.Series]:
    """One model's ``value`` as blocks (rows 0..last block, every index, NaN where nothing of a
    block was reset) × sublayer kinds, and the layers outside the blocks (label → value)."""
    layout = block_layout(summary)
    values = summary.assign(layer=summary["layer"].astype(str)).set_index("layer")[value]
    layout["value"] = layout["layer"].map(values).astype(float)
    inside = layout[layout["block"] >= 0]
    blocks = range(int(inside["block"].max()) + 1) if len(inside) else range(0)
    matrix = inside.pivot_table(index="block", columns="kind", values="value", aggfunc="first", dropna=False)
    matrix = matrix.reindex(index=blocks, columns=sublayer_kinds(layout))
    outside = layout.loc[layout["block"] < 0].set_index("label")["value"]
    return matrix, outside


def block_profile_table(resets: pd.DataFrame) -> pd.DataFrame:
    """Per model × block: the block's criticality, the mean over its reset sublayers, taken per
    seed and then over seeds (``mean``, ``std`` with ddof 1, NaN for one seed; ``n_seeds``,
    ``n_sublayers``). Per seed first, so that the spread is of whole blocks' values, what a
    seed changes in all of a block's sublayers at once. NaN criticalities stay NaN."""
    rows = []
    for model, part in resets.groupby(resets["model"].astype(str), sort=False):
        layout = block_layout(part).set_index("layer")
        part = part.assign(block=part["layer"].astype(str).map(layout["block"]))
        part = part[part["block"] >= 0]
        per_seed = part.groupby(["block", "seed"])["criticality"].agg(lambda s: s.mean(skipna=False))
        for block, seeds in per_seed.groupby(level="block"):
            rows.append({
                "model": model, "block": int(block), "mean": float(seeds.mean(skipna=False)),
                "std": float(seeds.std(ddof=1, skipna=False)) if len(seeds) > 1 else math.nan,
                "n_seeds": len(seeds), "n_sublayers": int(part.loc[part["block"] == block, "layer"].nunique()),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "block", "mean", "std", "n_seeds", "n_sublayers"])
