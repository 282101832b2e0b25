"""What the study's images can give its models, checked at parse time without decoding anything:
the image folder exists and holds what the subset asks for (ImageNet's validation set or one's
own class folders), every architecture has one output per class, a model built for one input
size gets it, and each model's input pipeline (layercrit.study.pipelines) can serve.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from layercrit.study.architectures import TIMM_DEFAULT_CLASSES, Architecture
from layercrit.study.errors import ConfigError
from layercrit.study.image_folders import IMAGE_EXTENSIONS, FolderCount, count_images
from layercrit.study.pipelines import STUDY, InputPipeline, PipelineError, model_pipeline, study_pipeline
from layercrit.study.text_data import check_text_file
from layercrit.study.zoo import Model


IMAGENET_LAYOUTS = (
    "class folders (val/<wnid>/*.JPEG), or flat (val/*.JPEG) with LOC_val_solution.csv "
    "or the devkit's ILSVRC2012_validation_ground_truth.txt (+ meta.mat) beside or above it"
)


OWN_FOLDER_HINT = "for your own images use data.kind: folder with data.root (README, 'Your own images')"


def check_data_source(config: dict[str, Any]) -> None:
    """Stop before any job when the study's image folder cannot give its evaluation images:
    missing, empty, other classes than ImageNet's, fewer images than the subset asks for.

    Only counts here (no decoding; this runs at every parse); the data rule checks every file.
    """
    data = config.get("data", {})
    if data.get("kind") == "folder":
        check_own_folder(data)
    if data.get("kind") == "text":
        check_text_file(data)
    if data.get("kind") != "imagenet":
        return
    root = config.get("imagenet_val")
    if not root:
        raise ConfigError(
            "imagenet_val: not set; this study evaluates on ImageNet-1k validation images. "
            f"Set it to the validation folder, e.g. --config imagenet_val=/data/imagenet/val. Accepted: {IMAGENET_LAYOUTS}"
        )
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(f"imagenet_val: {root!r} is not a directory. Set it to the validation folder; accepted: {IMAGENET_LAYOUTS}")
    with os.scandir(path) as entries:
        if next(entries, None) is None:
            raise ConfigError(f"imagenet_val: {root!r} is empty. Accepted: {IMAGENET_LAYOUTS}")
    found = count_images(path)
    check_no_stray_images(found, f"imagenet_val: {root!r}")
    expected = data.get("expected_classes")
    if found.classes and expected is not None and len(found.classes) != expected:
        raise ConfigError(
            f"imagenet_val: {root!r} has {len(found.classes)} class folders, but ImageNet-1k has {expected} "
            f"(data.expected_classes); {OWN_FOLDER_HINT}"
        )
    check_subset_size(data, found, f"imagenet_val {root!r}")


def check_subset_size(data: dict[str, Any], found: FolderCount, where: str) -> None:
    """The subset must not ask for more images than the folder holds."""
    wanted = data.get("subset_size")
    if wanted is not None and wanted > found.n_images:
        raise ConfigError(
            f"data.subset_size: {wanted} images asked for, but {where} holds {found.n_images}; "
            f"set data.subset_size to at most {found.n_images}, or to null for every image"
        )


def check_own_folder(data: dict[str, Any]) -> None:
    """An own image folder (data.kind folder) must hold class subfolders, each with images, and
    no image beside them."""
    root = Path(data["root"]).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.root: {str(root)!r} is not a directory; set it to a folder with one subfolder per class")
    found = count_images(root)
    if not found.classes:
        raise ConfigError(
            f"data.root: {str(root)!r} has no subfolders; it needs one per class (<root>/<class>/<image>), "
            f"as torchvision's ImageFolder reads it ({len(found.top_level_images)} images lie directly in it)"
        )
    check_no_stray_images(found, f"data.root: {str(root)!r}")
    if found.empty_classes:
        raise ConfigError(
            f"data.root: {len(found.empty_classes)} of the {len(found.classes)} subfolders of {str(root)!r} hold no "
            f"images ({', '.join(IMAGE_EXTENSIONS)}): {found.empty_classes[:5]}. Every subfolder is a class: "
            "remove the stray folders or add their images"
        )
    check_subset_size(data, found, f"data.root {str(root)!r}")


def check_no_stray_images(found: FolderCount, where: str) -> None:
    """Images directly in a folder of class folders belong to no class: ImageFolder's data job
    would refuse the folder (which layout is meant?) after the run has started."""
    if found.classes and found.top_level_images:
        stray = found.top_level_images
        raise ConfigError(
            f"{where} holds {len(stray)} image(s) directly in it, beside its {len(found.classes)} class folders: "
            f"{list(stray[:5])}{' …' if len(stray) > 5 else ''}. Every image must lie in the folder of its class "
            "(<root>/<class>/<image>): move these into their class folders, or out of the folder"
        )


def data_class_count(config: dict[str, Any]) -> tuple[int | None, str]:
    """How many classes the evaluation (and training) data has, and the config key that says so."""
    data = config.get("data", {})
    if data.get("kind") == "synthetic":
        return data.get("n_classes", 10), "data.n_classes"
    if data.get("kind") == "imagenet":
        return data.get("expected_classes"), "data.expected_classes"
    if data.get("kind") == "folder" and Path(data["root"]).expanduser().is_dir():
        return len(count_images(data["root"]).classes), f"the class folders of data.root {data['root']!r}"
    return None, ""


def check_class_count(config: dict[str, Any], architectures: dict[str, Architecture]) -> None:
    """Every architecture must have one output per class of the data: with fewer, training fails
    (a label without an output) and accuracies compare different label sets."""
    n_classes, data_key = data_class_count(config)
    if n_classes is None:
        return
    problems = []
    for arch in architectures.values():
        if arch.library == "python" and "num_classes" not in arch.kwargs:
            continue  # own code: its default is unknown here (kwargs.num_classes has it checked)
        if arch.library == "transformers":  # its config's num_labels (the layer list's record)
            outputs, key, redo = arch.extra["config"].get("num_labels", 2), "num_labels", ", then rewrite its layer list"
            default = "its repository's config"
        else:
            outputs, key, redo = arch.kwargs.get("num_classes", TIMM_DEFAULT_CLASSES), "num_classes", ""
            default = f"{arch.library}'s default"
        if outputs != n_classes:
            where = f"kwargs.{key}" if key in arch.kwargs else f"{default}, no kwargs.{key}"
            problems.append(
                f"architectures.{arch.id}: {outputs} outputs ({where}), but the data has {n_classes} classes "
                f"({data_key}); set architectures.{arch.id}.kwargs.{key} to {n_classes}{redo}"
            )
    if problems:  # every architecture at once, in zoo order
        raise ConfigError("\n".join(problems))


def data_image_side(config: dict[str, Any]) -> tuple[int | None, str]:
    """The side of the square images the study's data gives the models, and the config key that says so."""
    data = config.get("data", {})
    if data.get("kind") == "synthetic":
        return data.get("image_size", 32), "data.image_size"
    if data.get("kind") in ("imagenet", "folder") and data.get("pipeline", STUDY) == STUDY:
        return data.get("crop", 224), "data.crop"
    return None, ""  # none, or each model's own (input_pipelines checks those)


def input_pipelines(config: dict[str, Any], zoo: dict[str, Any], models: dict[str, Model], architectures: dict[str, Architecture]) -> dict[str, InputPipeline]:
    """Each model's input pipeline (layercrit.study.pipelines): the study's one, or with data.pipeline
    per_model its zoo entry's ``input``, else its architecture's pretrained config. None where the
    images are generated (data.kind synthetic: the schema allows only study there)."""
    data = config.get("data", {})
    if data.get("kind") not in ("imagenet", "folder"):
        return {}
    try:
        if data.get("pipeline", STUDY) == STUDY:
            shared = study_pipeline({"resize": 256, "crop": 224, **data})  # the schema's defaults, for unvalidated configs
            shared.check("data.resize, data.crop")
            return dict.fromkeys(models, shared)
        given = {entry["id"]: entry.get("input") for entry in zoo["models"]}
        return {
            m.id: model_pipeline(m.id, given[m.id], architectures[m.architecture].input, m.architecture)
            for m in models.values()
        }
    except PipelineError as error:
        raise ConfigError(str(error)) from None


def check_input_size(config: dict[str, Any], models: dict[str, Model], architectures: dict[str, Architecture]) -> None:
    """A model that takes only the input size it was built for (a ViT's patch grid and position
    embedding) cannot run on images of another size: stop before any job, naming what to set."""
    side, key = data_image_side(config)
    for arch in architectures.values():
        size = arch.input.get("input_size")
        if side is None or not arch.input.get("fixed_input_size") or not size or list(size) == [side, side]:
            continue
        users = [m.id for m in models.values() if m.architecture == arch.id]
        raise ConfigError(
            f"architectures.{arch.id} (models {users}): {arch.library} {arch.name} takes only {size[0]}x{size[1]} input "
            f"(it was built for that size), but the study's images are {side}x{side} ({key}); build it for the data "
            f"(e.g. kwargs img_size: {side}, then rewrite its layer list) or set {key} to {size[0]}"
        )
