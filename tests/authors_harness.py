"""Run the authors' main.py (tests/authors_code, unchanged) on the CPU as it runs on a GPU.

main.py keeps ``model.state_dict().copy()`` as its backup of the trained weights, then moves the
model with ``model.to(args.device)``. On a GPU the move gives the model new tensors and the backup
keeps the trained values. On the CPU ``.to("cpu")`` keeps the same tensors: the backup is the live
parameters, so every reset stays in the model for all later layers and the results are not the
method's (seen with torch 2.14). This harness makes ``Module.to`` copy, as a move between devices
does, and then runs main.py as ``__main__`` with the given arguments; main.py's own imports
(``models``, ``utils``) come from tests/authors_code on PYTHONPATH, as ``python main.py`` there finds them:

    PYTHONPATH=tests/authors_code python tests/authors_harness.py --model ... --imagenet ... --device cpu ...
"""

import runpy
import sys
from pathlib import Path

import torch

CODE = Path(__file__).resolve().parent / "authors_code"

_to = torch.nn.Module.to


def _to_new_tensors(self, *args, **kwargs):
    return _to(self, *args, **kwargs)._apply(torch.clone)


if __name__ == "__main__":
    torch.nn.Module.to = _to_new_tensors
    sys.argv = [str(CODE / "main.py"), *sys.argv[1:]]
    runpy.run_path(str(CODE / "main.py"), run_name="__main__")
