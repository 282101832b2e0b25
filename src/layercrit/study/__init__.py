"""The study: which models, layers, seeds and settings a run covers, built from a config and
a zoo, checked at parse time without torch (every job on a cluster parses the workflow again,
and importing torch costs seconds each time).

One module per idea; this package re-exports the names ``layercrit.study`` always had, so that
``from layercrit.study import X`` works wherever X now lives:

- errors: ``ConfigError``, what every check raises;
- yamlfiles: config and zoo files (a key given twice is an error), paths from the config;
- schemas: the config and zoo schemas as messages; the reset modes and seed schemes;
- layers: an architecture's layer list (TSV) and its header; selection: ``reset.layers``;
- architectures: what builds a model; zoo: the zoo file and its models;
- python_code: an architecture from the user's own code: its factory's files and their digest;
- pipelines, image_folders: how images are prepared per model, what an image folder holds;
- data_source: what the study's images can give its models;
- results: the names of what a study writes (reset-result paths, figures);
- core: ``Study`` and ``build_study``;
- workflow: ``load_workflow_study``, the one way to build a run's studies from its config;
- jobs: the pure parts of the workflow's rules (params, priorities).
"""

from layercrit.study.errors import ConfigError
from layercrit.study.yamlfiles import check_config_files, read_yaml, workflow_file
from layercrit.study.schemas import (
    RESET_MODES, CHECKOUT, SCHEMA_DIR, SEED_SCHEMES, load_schema, schema_problems, schema_validator, validated,
)
from layercrit.study.layers import (
    Layer, LayerListHeader, MODULE_NAME, layer_rows_sha256, read_layer_list_header, read_layer_table,
    write_layer_table,
)
from layercrit.study.selection import (
    DEFAULT_LAYER_TYPES, check_layer_types, layer_selections, select_layers, selected_layers,
)
from layercrit.study.architectures import (
    Architecture, ARCHITECTURE_LIBRARIES, TIMM_DEFAULT_CLASSES, architecture_from_spec, architecture_identity,
)
from layercrit.study.zoo import Model, load_zoo, model_normalization, model_record, relocatable_zoo, trains_here
from layercrit.study.results import (
    FIGURE_NAMES, LANGUAGE_FIGURE_NAMES, MODEL_TABLE, REPLICATION_FIGURES, RESET_RESULT, STUDY_FIGURE_FILES, reset_result_identity,
    reset_result_path,
)
from layercrit.study.data_source import (
    IMAGENET_LAYOUTS, OWN_FOLDER_HINT, check_class_count, check_data_source, check_input_size,
    check_no_stray_images, check_own_folder, check_subset_size, data_class_count, data_image_side, input_pipelines,
)
from layercrit.study.core import PUBLISHED_STUDY, Study, build_study, needs_initial_weights, parse_shard
from layercrit.study.workflow import WorkflowStudies, load_study, load_workflow_study, workflow_config, zoo_study

# every name layercrit.study had as one module, and the builder's
__all__ = [
    "ConfigError", "check_config_files", "read_yaml", "workflow_file", "RESET_MODES", "CHECKOUT", "SCHEMA_DIR",
    "SEED_SCHEMES", "load_schema", "schema_problems", "schema_validator", "validated", "Layer", "LayerListHeader",
    "MODULE_NAME", "layer_rows_sha256", "read_layer_list_header", "read_layer_table", "write_layer_table",
    "DEFAULT_LAYER_TYPES", "check_layer_types", "layer_selections", "select_layers", "selected_layers",
    "Architecture", "ARCHITECTURE_LIBRARIES", "TIMM_DEFAULT_CLASSES", "architecture_from_spec",
    "architecture_identity", "Model", "load_zoo", "model_normalization", "model_record", "relocatable_zoo", "trains_here",
    "FIGURE_NAMES", "LANGUAGE_FIGURE_NAMES", "MODEL_TABLE", "REPLICATION_FIGURES", "RESET_RESULT", "STUDY_FIGURE_FILES",
    "reset_result_identity", "reset_result_path", "IMAGENET_LAYOUTS", "OWN_FOLDER_HINT", "check_class_count",
    "check_data_source", "check_input_size", "check_no_stray_images", "check_own_folder", "check_subset_size",
    "data_class_count", "data_image_side", "input_pipelines", "PUBLISHED_STUDY", "Study", "build_study",
    "needs_initial_weights", "parse_shard", "WorkflowStudies", "load_study", "load_workflow_study",
    "workflow_config", "zoo_study",
]
