"""How much a reset changed a model's outputs.

With p = softmax(original logits) and q = softmax(reset logits), per image: cosine similarity,
L1 and L2 distance, KL(p ‖ q) and whether the top-1 class stayed the same; plus the reset
model's top-1/top-5 accuracy. Per-image values are summed in float64 so that an evaluation split
into batches gives the same mean as one pass.

The paper reports a mean over images only. The accumulator also sums the squares of the per-image
cosine gaps (1 − cosine), so that each result carries the standard error of its criticality over
the images (``criticality_se_images``) at no extra pass: the spread that another draw of
evaluation images of the same distribution would show. Gaps rather than cosines are squared
because cosines near 1 would cancel catastrophically in Σc² − n·c̄².
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

PER_IMAGE_METRICS = ("cosine", "l1", "l2", "kl", "top1_agreement")


def criticality(mean_cosine: float) -> float:
    """Criticality of a layer in percent: 100 × (1 − mean cosine similarity of softmax outputs).

    0 means the reset left every prediction's probability vector unchanged in direction; 100
    means the reset outputs are orthogonal to the original ones.
    """
    return 100.0 * (1.0 - mean_cosine)


def standard_error(total: float, total_sq: float, n: int) -> float:
    """Standard error of the mean of n values from their sum and sum of squares (sample variance,
    ddof=1); NaN for n < 2 or a non-finite sum. Rounding can make the variance a hair below 0: 0."""
    if n < 2 or not (math.isfinite(total) and math.isfinite(total_sq)):
        return math.nan
    variance = max(total_sq - total * total / n, 0.0) / (n - 1)
    return math.sqrt(variance / n)


def output_change(original_logits: torch.Tensor, reset_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics of the change from ``original_logits`` to ``reset_logits`` (N×C each)."""
    # float64: the metrics of nearly unchanged outputs are differences of numbers close to 1.
    original_logits = original_logits.double()
    reset_logits = reset_logits.double()
    log_p = original_logits.log_softmax(dim=1)
    log_q = reset_logits.log_softmax(dim=1)
    p, q = log_p.exp(), log_q.exp()
    return {
        "cosine": F.cosine_similarity(p, q, dim=1),
        "l1": (p - q).abs().sum(dim=1),
        "l2": (p - q).pow(2).sum(dim=1).sqrt(),
        # KL(p ‖ q) from log-probabilities: no log(0) where a probability underflows.
        "kl": (p * (log_p - log_q)).sum(dim=1),
        "top1_agreement": (original_logits.argmax(dim=1) == reset_logits.argmax(dim=1)).double(),
    }


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of images whose label is among the top-k logits, for each k (k capped at #classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1)
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


def clean_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float | int]:
    """A model's top-1/top-5 accuracy in percent and how many images have non-finite outputs;
    with any, the accuracies are NaN: an argmax over NaN is an index and would look real."""
    n_nonfinite = int((~torch.isfinite(logits)).any(dim=1).sum())
    if n_nonfinite:
        return {"top1": math.nan, "top5": math.nan, "n_nonfinite": n_nonfinite}
    correct = topk_correct(logits, labels)
    n = logits.shape[0]
    return {"top1": 100.0 * correct[1] / n, "top5": 100.0 * correct[5] / n, "n_nonfinite": 0}


@dataclass
class OutputChangeAccumulator:
    """Accumulates the metrics batch by batch; ``result()`` gives the means over all images.

    An image whose clean or reset outputs are not finite has NaN metrics: it stays in the means
    (which then become NaN) so that a broken evaluation is visible, not averaged away. Such
    images are counted per side (``n_nonfinite_clean``, ``n_nonfinite_reset``) and in total
    (``n_nonfinite``). The reset model's top-1/top-5 are NaN when any of its outputs is not finite.
    """

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PER_IMAGE_METRICS, 0.0))
    gap_sum: float = 0.0  # Σ (1 − cosine) and Σ (1 − cosine)²: the criticality's standard error
    gap_sq_sum: float = 0.0
    n_images: int = 0
    n_nonfinite: int = 0
    n_nonfinite_clean: int = 0
    n_nonfinite_reset: int = 0
    correct: dict[int, int] = field(default_factory=lambda: {1: 0, 5: 0})

    def update(self, original_logits: torch.Tensor, reset_logits: torch.Tensor, labels: torch.Tensor) -> None:
        clean_bad = ~torch.isfinite(original_logits).all(dim=1)
        reset_bad = ~torch.isfinite(reset_logits).all(dim=1)
        bad = clean_bad | reset_bad
        for name, values in output_change(original_logits, reset_logits).items():
            # top-1 agreement of a NaN row would read as a real 0 or 1
            values = values.double().masked_fill(bad, math.nan)
            self.sums[name] += float(values.sum())
            if name == "cosine":
                gap = 1.0 - values
                self.gap_sum += float(gap.sum())
                self.gap_sq_sum += float(gap.square().sum())
        self.n_nonfinite += int(bad.sum())
        self.n_nonfinite_clean += int(clean_bad.sum())
        self.n_nonfinite_reset += int(reset_bad.sum())
        for k, n in topk_correct(reset_logits.float(), labels).items():
            self.correct[k] += n
        self.n_images += reset_logits.shape[0]

    def result(self, original_top1: float) -> dict[str, float | int]:
        n = self.n_images
        means = {name: total / n for name, total in self.sums.items()}
        valid = not self.n_nonfinite_reset
        top1 = 100.0 * self.correct[1] / n if valid else math.nan
        return {
            **means,
            "criticality": criticality(means["cosine"]),
            # over the images: criticality is 100 × the mean gap, so its SE is 100 × the gap's
            "criticality_se_images": 100.0 * standard_error(self.gap_sum, self.gap_sq_sum, n),
            "top1": top1,
            "top5": 100.0 * self.correct[5] / n if valid else math.nan,
            "recovered_acc": top1 / original_top1 if original_top1 > 0 else math.nan,
            "n_images": n,
            "n_nonfinite": self.n_nonfinite,
            "n_nonfinite_clean": self.n_nonfinite_clean,
            "n_nonfinite_reset": self.n_nonfinite_reset,
        }


# Elements (positions x vocabulary) per piece that the next-token metrics take at once: the
# float64 temporaries of ``output_change`` stay near 8 x this many bytes each (~256 MiB).
NEXT_TOKEN_CHUNK_ELEMENTS = 1 << 25


def next_token_rows(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A language model's next-token predictions as rows: logits (N, L, V) of the first L - 1
    positions, flattened to (N·(L-1), V), and the tokens they predict (N·(L-1))."""
    return logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)


def next_token_record(logits: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a language model's baseline keeps of its clean outputs per predicted position (6 bytes,
    not V x 4): the log-probability of the next token, and whether it is the top-1 and among
    the top-5 predictions; each (N, L-1)."""
    rows, targets = next_token_rows(logits.float(), tokens)
    log_p = rows.log_softmax(dim=1).gather(1, targets.view(-1, 1)).view(-1)
    top = rows.topk(min(5, rows.shape[1]), dim=1).indices == targets.view(-1, 1)
    shape = (tokens.shape[0], tokens.shape[1] - 1)
    return {"target_logprob": log_p.view(shape), "top1_hit": top[:, 0].to(torch.uint8).view(shape), "top5_hit": top.any(dim=1).to(torch.uint8).view(shape)}


def next_token_accuracy(record: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """A language model's clean next-token top-1/top-5 accuracy (percent of positions), as
    ``clean_accuracy`` gives an image classifier's, from its ``next_token_record``; NaN with any
    non-finite log-probability."""
    log_p = record["target_logprob"]
    n_nonfinite = int((~torch.isfinite(log_p)).sum())
    if n_nonfinite:
        return {"top1": math.nan, "top5": math.nan, "n_nonfinite": n_nonfinite}
    n = log_p.numel()
    return {"top1": 100.0 * int(record["top1_hit"].sum()) / n, "top5": 100.0 * int(record["top5_hit"].sum()) / n, "n_nonfinite": 0}


def perplexity(record: dict[str, torch.Tensor]) -> float:
    """exp(mean next-token cross-entropy) of a ``next_token_record``."""
    return math.exp(-float(record["target_logprob"].double().mean()))


@dataclass
class NextTokenAccumulator:
    """The output-change metrics of a language model, over its next-token distributions: every
    predicted position is one row of an ``OutputChangeAccumulator`` (its ``n_images`` counts
    positions), plus the clean and reset models' cross-entropy and the clean top-1, so that
    ``result`` also gives next-token accuracy and perplexity, clean and reset."""

    change: OutputChangeAccumulator = field(default_factory=OutputChangeAccumulator)
    clean_nll: float = 0.0
    reset_nll: float = 0.0
    clean_correct: int = 0

    def update(self, clean_logits: torch.Tensor, reset_logits: torch.Tensor, tokens: torch.Tensor) -> None:
        clean, targets = next_token_rows(clean_logits, tokens)
        reset, _ = next_token_rows(reset_logits, tokens)
        step = max(1, NEXT_TOKEN_CHUNK_ELEMENTS // clean.shape[1])
        for start in range(0, len(targets), step):
            c, r, t = clean[start : start + step], reset[start : start + step], targets[start : start + step]
            self.change.update(c, r, t)
            self.clean_nll += float(F.cross_entropy(c.double(), t, reduction="sum"))
            self.reset_nll += float(F.cross_entropy(r.double(), t, reduction="sum"))
            self.clean_correct += int((c.argmax(dim=1) == t).sum())

    def result(self, original_top1: float) -> dict[str, float | int]:
        out = self.change.result(original_top1)
        n = out["n_images"]
        clean_ce, reset_ce = self.clean_nll / n, self.reset_nll / n
        return {
            **out,
            "n_positions": n,
            "clean_top1": 100.0 * self.clean_correct / n,
            "cross_entropy": reset_ce,
            "perplexity": math.exp(reset_ce),
            "clean_cross_entropy": clean_ce,
            "clean_perplexity": math.exp(clean_ce),
        }
