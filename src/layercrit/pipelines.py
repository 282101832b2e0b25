"""Moved to layercrit.study.pipelines (issue 32). This path stays importable, as the same module object,
so that workflow scripts importing it stay byte-identical and patching it patches its users."""

import sys

from layercrit.study import pipelines as _moved

sys.modules[__name__] = _moved
