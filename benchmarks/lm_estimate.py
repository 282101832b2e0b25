"""Estimate, not a measurement: the GPU time of config/llm.yaml from its models' shapes.

No GPU was available where this was written, so the study's time is estimated from arithmetic:

- jobs per model = (layers reset) x seeds, with layers = per-block layers x decoder layers +
  the layers outside the blocks (as the layer lists have them; tests/test_llm_study.py checks
  the count against the layer command's lists and the dry run);
- a reset job runs two forward passes (the clean one recomputed and the reset one) over
  windows x window_tokens tokens; forward FLOPs per token = 2 x (attention projections + MLP
  weights per block) x blocks + 2 x 2 x (L / 2) x d_model per block (attention over a causal
  window, L / 2 positions on average) + 2 x d_model x vocabulary (the output head). Full
  passes: activation reuse (on by default) starts both at the reset layer's block, which saves
  a share of this that depends on where the layer is, so this is an upper bound of the FLOPs;
- the time = FLOPs / an assumed sustained throughput, plus an assumed fixed cost per job
  (process start, torch and transformers imports, building and loading the model, reading
  the token file). Both assumptions are arguments, printed with the result.

The shapes are those of the repositories' config.json files (cited in the README, 'The issue's
study'). Usage:

    python -m benchmarks.lm_estimate                      # config/llm.yaml's settings
    python -m benchmarks.lm_estimate --tflops 50 --job-overhead-s 10
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shape:
    """What a model's config.json says of its size, and how many layers a layer list has."""

    blocks: int  # num_hidden_layers
    d_model: int  # hidden_size
    ffn: int  # intermediate_size
    heads: int
    kv_heads: int
    vocab: int
    gated_mlp: bool  # Llama and Qwen2: gate, up and down projections; GPT-NeoX: two
    layers_per_block: int  # the layers of a decoder layer in the layer list (Linear and norms)
    layers_outside: int  # embeddings, final norm, output head (none of its own where tied to the embeddings)

    @property
    def layers(self) -> int:
        return self.layers_per_block * self.blocks + self.layers_outside

    def forward_flops_per_token(self, window_tokens: int) -> float:
        head_dim = self.d_model // self.heads
        attention = self.d_model * (2 * self.d_model + 2 * self.kv_heads * head_dim)  # q, o; k, v
        mlp = (3 if self.gated_mlp else 2) * self.d_model * self.ffn
        scores = 2 * (window_tokens / 2) * self.d_model  # q.k and attention-weighted v
        return 2 * (attention + mlp + scores) * self.blocks + 2 * self.d_model * self.vocab


PYTHIA_160M = Shape(12, 768, 3072, 12, 12, 50304, False, 6, 3)
SHAPES = {  # by repository
    "EleutherAI/pythia-160m": PYTHIA_160M,
    "HuggingFaceTB/SmolLM2-135M": Shape(30, 576, 1536, 9, 3, 49152, True, 9, 2),
    "HuggingFaceTB/SmolLM2-135M-Instruct": Shape(30, 576, 1536, 9, 3, 49152, True, 9, 2),
    "Qwen/Qwen2.5-0.5B": Shape(24, 896, 4864, 14, 2, 151936, True, 9, 2),
    "Qwen/Qwen2.5-0.5B-Instruct": Shape(24, 896, 4864, 14, 2, 151936, True, 9, 2),
}


def estimate(config_path: Path, tflops: float, job_overhead_s: float) -> list[dict]:
    """One row per model of the study's zoo: its jobs and their estimated GPU time."""
    config = yaml.safe_load(config_path.read_text())
    zoo = yaml.safe_load((REPO / config["zoo"]).read_text())
    seeds = len(config["reset"]["seeds"])
    tokens = config["data"]["windows"] * config["data"]["window_tokens"]
    rows = []
    for model in zoo["models"]:
        shape = SHAPES[model["source"]["repo"]]
        jobs = shape.layers * seeds
        flops_per_job = 2 * tokens * shape.forward_flops_per_token(config["data"]["window_tokens"])
        seconds_per_job = flops_per_job / (tflops * 1e12) + job_overhead_s
        rows.append({"model": model["id"], "layers": shape.layers, "jobs": jobs, "gflop_per_token": shape.forward_flops_per_token(config["data"]["window_tokens"]) / 1e9,
                     "s_per_job": seconds_per_job, "gpu_h": jobs * seconds_per_job / 3600})  # fmt: skip
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lm_estimate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "config/llm.yaml")
    parser.add_argument("--tflops", type=float, default=25.0, help="assumed sustained FLOP/s of the forward passes, in TFLOP/s (default %(default)s)")
    parser.add_argument("--job-overhead-s", type=float, default=15.0, help="assumed fixed seconds per job (default %(default)s)")
    args = parser.parse_args()
    rows = estimate(args.config, args.tflops, args.job_overhead_s)
    print(f"ESTIMATE (not measured): {args.tflops:g} TFLOP/s sustained, {args.job_overhead_s:g} s per job, full forward passes")
    print(f"{'model':<26}{'layers':>7}{'jobs':>7}{'GFLOP/token':>13}{'s/job':>8}{'GPU h':>8}")
    for r in rows:
        print(f"{r['model']:<26}{r['layers']:>7}{r['jobs']:>7}{r['gflop_per_token']:>13.3f}{r['s_per_job']:>8.1f}{r['gpu_h']:>8.2f}")
    print(f"{'total':<26}{sum(r['layers'] for r in rows):>7}{sum(r['jobs'] for r in rows):>7}{'':>21}{sum(r['gpu_h'] for r in rows):>8.2f}")


if __name__ == "__main__":
    _main()
