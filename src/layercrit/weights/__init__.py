"""Published weights: what a zoo entry's ``source`` says and the facts the plan reads of a local
file (``specs``, torch-free: the Snakefile reads it while it parses), fetching a model's weights by
source kind (``sources``), reading a checkpoint file without running its code
(``checkpoint_files``) and turning what was read into the architecture's state_dict
(``conversion``). The verified download cache they use is ``layercrit.downloads``."""
