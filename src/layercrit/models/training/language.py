"""Training a causal language model of a zoo here: windows of a text tokenized by the model's own
tokenizer, drawn in a seeded order, next-token cross-entropy (with label smoothing) under AdamW,
gradients clipped; deterministic given the seed, on one CPU with one thread count. The job that
trains one zoo model writes its trained and initial weights and its history.

The text is cut as the evaluation text is (``layercrit.text_windows``): its documents in the
seeded ``document_order``, each followed by the end-of-text token, into windows of
``window_tokens`` tokens; the last ``heldout_windows`` are kept out of training and scored after
it. Steps take ``batch_size`` windows from a stream of seeded permutations of the others, so the
order of the first k steps does not depend on how many follow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from layercrit.io import file_sha256, provenance, write_json
from layercrit.models.training.language_recipe import LanguageRecipe
from layercrit.models.training.recipe import recipe_of
from layercrit.models.zoo import build_architecture, load_checkpoint, load_model, save_checkpoint
from layercrit.study import Architecture
from layercrit.text_windows import document_order, document_tokens, fetch_tokenizer, read_documents, tokenizer_source

log = logging.getLogger("layercrit.training.language")


def training_windows(
    tokenizer: Any, tokenizer_config: dict[str, Any], documents: list[str], recipe: LanguageRecipe, seed: int, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (training, held-out) windows of ``documents``: every whole window of the text in the
    seeded document order, the last ``recipe.heldout_windows`` held out; ``ValueError`` if the
    text leaves no window to train on."""
    ids, _ = document_tokens(tokenizer, tokenizer_config, documents, document_order(len(documents), seed))  # the whole text, once
    n_windows = len(ids) // recipe.window_tokens
    if n_windows <= recipe.heldout_windows:
        raise ValueError(
            f"{where}: the text gives {len(ids)} tokens, {n_windows} windows of window_tokens {recipe.window_tokens}, "
            f"which leaves none to train on beside heldout_windows {recipe.heldout_windows}; give a longer text, "
            "or fewer held-out windows or shorter ones"
        )
    windows = torch.tensor(ids[: n_windows * recipe.window_tokens], dtype=torch.int64).view(n_windows, recipe.window_tokens)
    return windows[: -recipe.heldout_windows], windows[-recipe.heldout_windows :]


def next_token_loss(model: torch.nn.Module, windows: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the model's prediction of each window's next tokens (``model``: as
    ``build_architecture`` makes a causal LM, its forward returning the logits)."""
    logits = model(windows)[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), label_smoothing=label_smoothing)


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, windows: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (no label smoothing) over ``windows``, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for a in range(0, len(windows), batch_size):
            batch = windows[a : a + batch_size]
            total += float(next_token_loss(model, batch)) * len(batch)
    finally:
        model.train(was_training)
    return total / len(windows)


def train_causal_lm(
    model: torch.nn.Module,
    train: torch.Tensor,
    heldout: torch.Tensor,
    recipe: LanguageRecipe,
    *,
    seed: int,
    after_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place by ``recipe`` on the ``train`` windows (N x L token ids); its
    history: the loss at every ``log_every``-th step and the last, the held-out loss before and
    after, wall time, steps/s and tokens/s. ``after_step(k, model)`` is called after step k
    (1-based). Window order and any dropout draw from ``seed`` only (torch's global RNG is
    forked and restored)."""
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.999), weight_decay=recipe.weight_decay)
    history: dict[str, Any] = {"train_windows": len(train), "heldout_windows": len(heldout), "window_tokens": train.shape[1]}
    history["heldout_loss_before"] = heldout_loss(model, heldout, recipe.batch_size)
    steps, losses = [], []
    pending: list[int] = []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for step in range(recipe.steps):
            while len(pending) < recipe.batch_size:
                pending.extend(torch.randperm(len(train), generator=order).tolist())
            batch, pending = train[pending[: recipe.batch_size]], pending[recipe.batch_size :]
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(step)
            loss = next_token_loss(model, batch, recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            if (step + 1) % recipe.log_every == 0 or step + 1 == recipe.steps:
                steps.append(step + 1)
                losses.append(float(loss.detach()))
                log.info("step %d/%d: loss %.4f, lr %.3g", step + 1, recipe.steps, losses[-1], recipe.lr_at(step))
            if after_step is not None:
                after_step(step + 1, model)
    wall = time.perf_counter() - start
    model.eval()
    history |= {"steps": steps, "loss": losses, "wall_s": wall, "steps_per_s": recipe.steps / wall,
                "tokens_per_s": recipe.steps * recipe.batch_size * train.shape[1] / wall}  # fmt: skip
    history["heldout_loss"] = heldout_loss(model, heldout, recipe.batch_size)
    log.info("held-out loss %.4f (%.4f before); %.1f steps/s, %.0f tokens/s", history["heldout_loss"], history["heldout_loss_before"],
             history["steps_per_s"], history["tokens_per_s"])  # fmt: skip
    return history


def train_zoo_language_model(
    model: Mapping[str, Any],
    arch: Architecture,
    text: str | Path,
    *,
    tokenizer: Mapping[str, Any],
    cache_dir: str | Path,
    init_checkpoint: str | Path | None,
    checkpoint_out: str | Path,
    init_out: str | Path,
    history_out: str | Path,
    threads: int,
) -> dict[str, Any]:
    """Train one causal language model of a zoo (``kind: train`` with a language recipe) on the
    text file ``text`` with its architecture's ``tokenizer`` (``layercrit.study.text_data.tokenizers``,
    fetched verified into ``cache_dir``), from ``init_checkpoint`` (its ``init_from`` model's
    checkpoint) or a fresh initialization under its seed; write its trained and initial weights
    (what `reinit` rewinds to) and its history; return the history."""
    torch.set_num_threads(threads)
    source = model["source"]
    seed = source.get("seed", 0)
    recipe = recipe_of(source, None)
    if not isinstance(recipe, LanguageRecipe):
        raise ValueError(f"model {model['id']!r}: its recipe trains an image classifier, not a language model")
    if (recipe.init_from is None) != (init_checkpoint is None):
        raise ValueError(f"model {model['id']!r}: init_from {recipe.init_from!r} needs its checkpoint, and only it (got {init_checkpoint})")
    tok, tok_config = fetch_tokenizer(dict(tokenizer), cache_dir)
    where = f"model {model['id']!r}: text {str(text)!r} with the tokenizer of {tokenizer_source(dict(tokenizer))}"
    train, heldout = training_windows(tok, tok_config, read_documents(text), recipe, seed, where)

    net = load_model(arch, load_checkpoint(init_checkpoint)) if init_checkpoint else build_architecture(arch, seed=seed)
    init_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    log.info("model %s: %d training and %d held-out windows of %d tokens, %s", model["id"], len(train), len(heldout),
             recipe.window_tokens, f"from {recipe.init_from}" if init_checkpoint else f"fresh under seed {seed}")  # fmt: skip
    history = train_causal_lm(net, train, heldout, recipe, seed=seed)

    # what the weights were trained from, in the file itself (as the image classifiers' training does)
    meta = {"model": model["id"], "architecture": arch.id, "seed": seed, "recipe": recipe.to_dict()}
    save_checkpoint(init_out, init_state, None, {**meta, "weights": "initialization"})
    save_checkpoint(checkpoint_out, {k: v.detach().clone() for k, v in net.state_dict().items()}, None, {**meta, "weights": "trained"})
    text_record = {"text": str(text), "text_sha256": file_sha256(text)}
    history = {**meta, **history, **text_record, **provenance(threads=threads)}
    write_json(history_out, history)
    return history
