"""Parse-time checks of text studies that need no model: the memory one batch of logits takes."""

import pytest

from layercrit.study import Architecture, ConfigError
from layercrit.study.text_data import LOGITS_MEMORY_LIMIT_BYTES, check_logits_memory


def language_model(vocab: int) -> Architecture:
    return Architecture("qwen", "Qwen/Qwen2.5-0.5B", library="transformers", input={"vocab_size": vocab})


def text_config(batch_size: int, window_tokens: int = 128) -> dict:
    return {"batch_size": batch_size, "data": {"kind": "text", "path": "corpus.jsonl", "window_tokens": window_tokens}}


def test_the_image_default_batch_size_stops_a_text_study_of_a_large_vocabulary_naming_the_largest_that_fits():
    with pytest.raises(ConfigError) as e:
        check_logits_memory(text_config(500), {"qwen": language_model(151_936)})
    message = str(e.value)
    largest = LOGITS_MEMORY_LIMIT_BYTES // (2 * 128 * 151_936 * 4)
    assert "batch_size: 500 windows of 128 tokens" in message and "72.4 GiB" in message
    assert f"set batch_size to at most {largest}" in message
    check_logits_memory(text_config(largest), {"qwen": language_model(151_936)})  # the one it names fits


def test_shorter_windows_or_image_studies_pass():
    check_logits_memory(text_config(500, window_tokens=8), {"qwen": language_model(151_936)})
    image = {"batch_size": 500, "data": {"kind": "folder", "root": "images"}}
    check_logits_memory(image, {"qwen": language_model(151_936)})
