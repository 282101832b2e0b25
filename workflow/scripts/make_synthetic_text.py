"""Snakemake adapter: generated text of one task, seed and count (layercrit.synthetic_text)."""

from pathlib import Path

from layercrit.joblog import script_log
from layercrit.synthetic_text import write_text


def main(sm) -> None:
    text = sm.params.text
    write_text(Path(sm.output[0]), text["task"], text["seed"], text["documents"])
    print(f"wrote {text['documents']} documents of task {text['task']!r} (seed {text['seed']}) to {sm.output[0]}", flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
