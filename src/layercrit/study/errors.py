"""The one exception every check of a study's config raises.

Its own module because every other part of the study package raises it, and the workflow,
the launcher and the tests catch it: none of them should need the rest to name it.
"""


class ConfigError(ValueError):
    """A study configuration that cannot run; the message names the key and what is allowed."""
