"""A model on the torch side: building an architecture, its checkpoints and layer lists (``zoo``,
also ``python -m layercrit.zoo layers``), which fresh model a randomize seed stands for
(``seed_schemes``), and training the demo zoo (``training``). What the config says of a model is
``layercrit.study``'s (torch-free)."""
