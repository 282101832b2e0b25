"""The authors' released raw results, as this project's tidy reset table.

The file (github.com/paulgavrikov/layer_criticality, raw-results/results.csv) has one row per
model × layer × trial with columns ``top1_acc, top5_acc, loss, batch_acc, layer, pred_cos_sim,
pred_l1_err, pred_l2_err, pred_ce_loss, trial, recovered_acc, model_id``. Layer names carry a
``model.`` prefix, accuracies are in percent, ``trial`` is 0.0/1.0/2.0, ``batch_acc`` is empty and
``pred_ce_loss`` (cross-entropy of logits against logits) is not meaningful, so it is dropped.
"""

from __future__ import annotations

import pandas as pd

from layercrit.evaluation.metrics import criticality

PUBLISHED_COLUMNS = (
    "top1_acc", "top5_acc", "loss", "batch_acc", "layer", "pred_cos_sim", "pred_l1_err",
    "pred_l2_err", "pred_ce_loss", "trial", "recovered_acc", "model_id",
)  # fmt: skip


def published_to_tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """Rename and convert the published columns to this project's reset-table columns."""
    missing = [c for c in PUBLISHED_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"published results lack the column(s) {missing}; expected {list(PUBLISHED_COLUMNS)}")
    trial = raw["trial"].astype(float)
    if not (trial == trial.round()).all():
        raise ValueError("published results: 'trial' must hold whole numbers (0.0, 1.0, 2.0)")
    layer = raw["layer"].astype(str).str.removeprefix("model.")
    return pd.DataFrame(
        {
            "model": raw["model_id"].astype(str),
            "layer": layer,
            "seed": trial.astype(int),
            "mode": "randomize",
            "criticality": raw["pred_cos_sim"].map(criticality),
            "cosine": raw["pred_cos_sim"].astype(float),
            "l1": raw["pred_l1_err"].astype(float),
            "l2": raw["pred_l2_err"].astype(float),
            "top1": raw["top1_acc"].astype(float),
            "top5": raw["top5_acc"].astype(float),
            "recovered_acc": raw["recovered_acc"].astype(float),
            "loss": raw["loss"].astype(float),
            "source": "published",
        }
    )
