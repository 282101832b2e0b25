"""``python -m layercrit.slurm``: the same as the ``layercrit-slurm`` command."""

from layercrit.slurm import _main

raise SystemExit(_main())
