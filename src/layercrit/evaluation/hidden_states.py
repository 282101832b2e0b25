"""Activation reuse for causal language models: the clean hidden states between decoder layers.

A transformers causal LM runs its decoder layers one after the other (``model.layers`` of a
Llama or Qwen2, ``gpt_neox.layers`` of a GPT-NeoX), each taking the previous one's output. A
reset of a layer in decoder layer k changes nothing computed before layer k runs, so the reset
pass (and the clean pass a reset job recomputes beside it) can start from the clean input of
layer k. transformers 5 models cannot be traced by torch.fx, so the chain is cut at the Hugging
Face modules themselves: ``CleanHiddenStates.record`` runs the clean model once and keeps, per
batch, the output of decoder layers (boundary s = the output of layer s - 1 = the input of layer
s); ``resumed(s, batch)`` then makes layers 0 … s-2 return their input untouched and layer s-1
return the kept boundary, so that the model's own forward (embeddings, position embeddings,
attention mask: cheap) goes on from layer s exactly as the full pass did.

Which boundary a layer's pass may start from is read from one profiled forward pass, not from its
name: the number of decoder layers that have finished before the layer, or any module that shares
a parameter with it (Qwen2's output head tied to its embeddings), is first called. Embeddings and
anything else before decoder layer 0 thus run the full pass; the final norm and the output head
start after the last decoder layer.

The kept states cost d_model x 4 bytes (float32) per token and boundary, n_layers boundaries:
Pythia-160m (d 768, 12 layers) 37 GB per 1M tokens, SmolLM2-135M (d 576, 30 layers) 69 GB. Within
the budget (``activation_cache_mb``) the deepest boundaries are kept first (they skip the most
work); a layer whose boundary is not kept starts at the nearest kept one before it, or in full.
The result must be the full pass bit for bit: the recording pass is a full pass (the hooks only
look), and its next-token log-probabilities must equal the baseline's exactly, else nothing is
reused.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from layercrit.evaluation.forward import EvalSettings, evaluating
from layercrit.evaluation.metrics import next_token_record

log = logging.getLogger(__name__)


def decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """The module list of a causal LM's decoder layers (name, list): the ModuleList with as many
    entries as the config has hidden layers; None where there is no such one list."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers]
    return lists[0] if len(lists) == 1 and n_layers else None


class _FirstPass:
    """What the first batch's pass shows: the order of module calls (when each module is first
    entered, when each decoder layer returns: one counter for both) and copies of the decoder
    layers' outputs (to see a later module write into one in place)."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[torch.nn.Module]):
        self.first_call: dict[str, int] = {}
        self.layer_done: list[float] = [math.inf] * len(layers)
        self.copies: dict[int, Any] = {}  # boundary -> copy of the output of layer boundary - 1
        self._count = 0
        self._handles = []
        for name, module in model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._entered(name)))
        for j, layer in enumerate(layers):
            self._handles.append(layer.register_forward_hook(self._returned(j)))

    def _tick(self) -> int:
        self._count += 1
        return self._count

    def _entered(self, name: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            self.first_call.setdefault(name, self._tick())

        return hook

    def _returned(self, j: int):
        def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
            self.layer_done[j] = self._tick()
            self.copies[j + 1] = output.clone() if isinstance(output, torch.Tensor) else None

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class CleanHiddenStates:
    """The clean hidden states at the boundaries between a causal LM's decoder layers, per batch
    of windows (``record``), and the passes that start from them (``start_for``, ``resumed``)."""

    def __init__(self, model: torch.nn.Module, budget_bytes: int):
        self.model = model
        self.budget_bytes = budget_bytes
        found = decoder_layers(model)
        self.stack_name, self.layers = found if found else ("", torch.nn.ModuleList())
        self.kept: dict[int, list[torch.Tensor]] = {}  # boundary s (1..n) -> output of layer s-1 per batch
        self.exact = False
        self._starts: dict[str, int] = {}  # module name -> decoder layers finished before it is first used

    def record(self, batches: Sequence[torch.Tensor], settings: EvalSettings, device: str, baseline_logprob: torch.Tensor) -> None:
        """Run the clean model on every batch, keep boundaries within the budget, and check that
        its next-token log-probabilities equal ``baseline_logprob`` (N x (L-1)) exactly."""
        if not len(self.layers) or self.budget_bytes <= 0 or not batches:
            return
        outputs: dict[int, torch.Tensor] = {}
        handles = [layer.register_forward_hook(self._keep(j + 1, outputs)) for j, layer in enumerate(self.layers)]
        chosen: list[int] | None = None
        logprobs = []
        try:
            with evaluating(settings, device):
                for batch in batches:
                    outputs.clear()
                    first = _FirstPass(self.model, self.layers) if chosen is None else None
                    try:
                        logits = self.model(batch)
                    finally:
                        if first is not None:
                            first.remove()
                    logprobs.append(next_token_record(logits, batch)["target_logprob"].cpu())
                    if chosen is None:
                        if not self._usable(outputs, first.copies, batch):
                            return
                        self._starts = self._profile(first)
                        per_window = {s: t.untyped_storage().nbytes() / len(batch) for s, t in outputs.items()}
                        chosen = self._choose(per_window, sum(len(b) for b in batches))
                        if not chosen:  # not even the last layer's output fits: every pass runs in full
                            return
                        self.kept = {s: [] for s in chosen}
                    for s in chosen:
                        self.kept[s].append(outputs[s])
        finally:
            for handle in handles:
                handle.remove()
        recorded = torch.cat(logprobs)
        self.exact = recorded.shape == baseline_logprob.shape and torch.equal(recorded, baseline_logprob)
        if not self.exact:
            log.warning("the clean pass differs from the baseline's log-probabilities: not reusing hidden states")
            self.kept = {}

    @staticmethod
    def _keep(boundary: int, outputs: dict[int, Any]):
        def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
            outputs[boundary] = output

        return hook

    def _usable(self, outputs: dict[int, Any], copies: dict[int, Any], batch: torch.Tensor) -> bool:
        """Every decoder layer returned one tensor of hidden states (B x L x d) that no later
        module changed in place."""
        if len(outputs) != len(self.layers) or not all(isinstance(t, torch.Tensor) and t.shape[:2] == batch.shape for t in outputs.values()):
            log.warning("%s: decoder layers do not each return one tensor of hidden states: not reusing them", self.stack_name)
            return False
        if changed := [s for s, t in outputs.items() if not torch.equal(t, copies[s])]:
            log.warning("%s: the output of layers %s is changed in place later: not reusing hidden states", self.stack_name, [s - 1 for s in changed])
            return False
        return True

    def _profile(self, order: _FirstPass) -> dict[str, int]:
        """Per module name, how many decoder layers had returned before it or a module that shares
        a tensor with it was first called: the boundary its reset may start from."""
        holders: dict[int, list[str]] = {}
        for name, module in self.model.named_modules():
            for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
                if t.numel():
                    holders.setdefault(t.data_ptr(), []).append(name)
        starts = {}
        for name, module in self.model.named_modules():
            sharing = {name}
            for t in (*module.parameters(), *module.buffers()):
                sharing.update(holders.get(t.data_ptr(), ()))
            first = min((order.first_call.get(m, math.inf) for m in sharing), default=math.inf)
            starts[name] = sum(done < first for done in order.layer_done)
        return starts

    def _choose(self, bytes_per_window: dict[int, float], n_windows: int) -> list[int]:
        # deepest first: they skip the most work
        budget, chosen = self.budget_bytes, []
        for s in sorted(bytes_per_window, reverse=True):
            need = bytes_per_window[s] * n_windows
            if need <= budget:
                chosen.append(s)
                budget -= need
        return sorted(chosen)

    def start_for(self, module: str) -> int | None:
        """The boundary a pass with ``module`` reset (or removed) starts from: the nearest kept one
        at or before the decoder layers that finish before it is used; None: the full pass."""
        if not self.exact or module not in self._starts:
            return None
        return max((s for s in self.kept if s <= self._starts[module]), default=None)

    def boundary_name(self, start: int | None) -> str:
        """Where a pass from ``start`` begins: ``input``, or the decoder layer it runs first
        (``<stack>.<n>`` after the last: the final norm)."""
        return "input" if start is None else f"{self.stack_name}.{start}"

    @contextlib.contextmanager
    def resumed(self, start: int | None, batch: int) -> Iterator[None]:
        """Within the block, a call of the model on batch ``batch`` starts at boundary ``start``:
        decoder layers before it return their input untouched, the last of them the kept hidden
        state. ``start`` None: the full pass."""
        if start is None:
            yield
            return
        hidden = self.kept[start][batch]
        skipped = list(self.layers[:start])
        try:
            for layer in skipped[:-1]:
                layer.forward = _passthrough
            skipped[-1].forward = lambda hidden_states, *args, **kwargs: hidden
            yield
        finally:
            for layer in skipped:
                layer.__dict__.pop("forward", None)

    @property
    def nbytes(self) -> int:
        return sum(t.untyped_storage().nbytes() for ts in self.kept.values() for t in ts)


def _passthrough(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return hidden_states
