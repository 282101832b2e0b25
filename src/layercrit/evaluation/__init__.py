"""The paper's method and what runs it: resetting a layer (``reset``), comparing outputs
(``metrics``), running a model on the evaluation images (``forward``, with activation reuse from
``graph``), the baseline and reset jobs (``jobs``), what a long-lived process keeps loaded
(``cache``), what a reset job checks of its baseline (``baseline_checks``), device leases
(``devices``) and what jobs side by side in one process share (``concurrency``).

The names of the former ``layercrit.evaluation`` module stay importable from here. They are
imported when first asked for: the Snakefile imports ``layercrit.evaluation.devices`` while it
parses, which must not import torch.
"""

from layercrit._moved import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ACCURACY_GAP_WARNING": "jobs",
        "evaluate_baseline": "jobs",
        "ResetInputs": "jobs",
        "measure_reset": "jobs",
        "evaluate_reset": "jobs",
        "EvaluationCache": "cache",
        "DeviceCache": "cache",
        "HeldActivations": "cache",
        "DEFAULT_CACHE": "cache",
        "StaleBaselineError": "baseline_checks",
        "BASELINE_INPUTS": "baseline_checks",
        "recompute_command": "baseline_checks",
        "verify_baseline_inputs": "baseline_checks",
        "summary_contradictions": "baseline_checks",
        "check_baseline_summary": "baseline_checks",
    },
)
