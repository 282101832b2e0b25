"""A model on the torch side: building an architecture, its checkpoints and layer lists (``zoo``,
also ``python -m layercrit.zoo layers``; each library's builder: ``builders``, the user's own
code: ``own_code``), which fresh model a randomize seed stands for
(``seed_schemes``), and training the demo zoo (``training``). What the config says of a model is
``layercrit.study``'s (torch-free)."""
