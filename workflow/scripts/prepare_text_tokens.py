"""Snakemake adapter: the token windows of the study's text for one tokenizer (data.kind text)."""

from layercrit.joblog import script_log
from layercrit.text_windows import write_token_windows


def main(sm) -> None:
    record = write_token_windows(sm.output.tokens, sm.params.data, sm.params.tokenizer, sm.params.cache, sm.input.text)
    print({k: v for k, v in record.items() if k != "tokenizer"}, flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
