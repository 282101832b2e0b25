"""The config and zoo schemas (``workflow/schemas/``): the one check of each key, as messages.

The schemas are data of the workflow, read by Snakemake's ``validate`` (which also fills in
their defaults) and here by a stricter validator, so that a message names the key, what is
wrong and what is allowed. The reset modes and seed schemes are read from the config schema, so
that its list is the one list.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from layercrit.study.errors import ConfigError

# The checkout's workflow/schemas (this file is src/layercrit/study/schemas.py).
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "workflow" / "schemas"
# The checkout the package belongs to: where shipped zoos and recorded checkpoints are found.
CHECKOUT = SCHEMA_DIR.parents[1]


def load_schema(name: str) -> dict[str, Any]:
    """A schema of ``workflow/schemas/`` (``name``: ``config`` or ``zoo``), as data."""
    with open(SCHEMA_DIR / f"{name}.schema.yaml") as f:
        return yaml.safe_load(f)


# The reset modes: the config schema's list is the one list (layercrit.evaluation.reset says what each does).
RESET_MODES: tuple[str, ...] = tuple(load_schema("config")["properties"]["reset"]["properties"]["mode"]["enum"])
# How a randomize reset's seed names its fresh model (layercrit.models.seed_schemes).
SEED_SCHEMES: tuple[str, ...] = tuple(load_schema("config")["properties"]["reset"]["properties"]["seed_scheme"]["enum"])


def validated(data: Any, name: str, what: str) -> Any:
    """``data`` checked against schema ``name`` (``config`` or ``zoo``) as the workflow checks it:
    by Snakemake's validate, which also fills in the defaults, then by the same schema's strict
    validator (an integer is an int: 500.0 is not). A :class:`ConfigError` says briefly what is
    wrong (``what`` names the data). The workflow and layercrit-slurm's submission check use it."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = SCHEMA_DIR / f"{name}.schema.yaml"
    try:
        validate(data, str(schema))
        failed = False
    except WorkflowError:
        failed = True
    problems = schema_problems(data, load_schema(name), what)
    if failed or problems:
        raise ConfigError(f"Invalid {what}:\n" + ("\n".join(problems) or f"{what} does not match {schema}"))
    return data


def schema_validator(schema: dict[str, Any]) -> Any:
    """jsonschema's validator of ``schema``, where ``integer`` means an int: JSON Schema counts
    500.0 (or 1e3 from ``--config``) as an integer, but a batch size, seed or count given as a
    float fails later in torch or in a file name (``seed0.0.json``)."""
    import jsonschema

    base = jsonschema.validators.validator_for(schema)
    strict = base.TYPE_CHECKER.redefine("integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=strict)(schema)


def schema_problems(data: Any, schema: dict[str, Any] | Any, what: str) -> list[str]:
    """What is wrong with ``data`` under ``schema`` (a schema, or its ``schema_validator``), one
    line per problem (none: it is valid)."""
    validator = schema_validator(schema) if isinstance(schema, dict) else schema
    lines = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        key = ".".join(map(str, error.absolute_path)) or "(top level)"
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            unexpected = sorted(set(error.instance) - set(allowed))
            unexpected = [u for u in unexpected if not any(re.match(p, u) for p in error.schema.get("patternProperties", {}))]
            lines.append(f"{what} key {key!r}: unknown key(s) {unexpected}; allowed: {allowed}")
        elif error.validator == "enum":
            lines.append(f"{what} key {key!r}: {error.instance!r} is not allowed; allowed: {error.validator_value}")
        elif error.validator == "required":
            lines.append(f"{what} key {key!r}: {error.message}")
        else:
            # jsonschema's message already says what is wrong and allowed ("-1 is less than the
            # minimum of 0"); the key's description says what it is for.
            about = error.schema.get("description")
            lines.append(f"{what} key {key!r}: {error.message}" + (f" ({key}: {about})" if about else "") + _string_hint(error))
    return lines


def _string_hint(error: Any) -> str:
    """Why a number or list may have arrived as a string: Snakemake reads the values inside a
    nested ``--config`` entry (``reset={seeds: [0, 1, 2]}``) as strings, top-level ones typed."""
    expected = error.validator_value if error.validator == "type" else None
    expected = {expected} if isinstance(expected, str) else set(expected or ())
    if isinstance(error.instance, str) and expected and "string" not in expected:
        return (
            f". It is the string {error.instance!r}: Snakemake passes the values inside a nested --config entry "
            "(e.g. reset={seeds: [0, 1, 2]}) as strings. Put nested settings in a config file and give it with "
            "--configfile (top-level ones such as batch_size=250 arrive typed)"
        )
    return ""
