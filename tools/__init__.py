"""The repository's maintenance commands (`make` targets), each run as `python -m tools.<name>`
from the repository root."""
