"""The paper's evaluation data: a fixed 10,000-image subset of the ImageNet-1k validation set.

The 50,000 validation images are ordered as torchvision's ``ImageFolder`` orders them (class
folders sorted, files sorted within each, labels = index of the sorted WordNet id). The authors
then iterated ``DataLoader(ImageFolder(val), batch_size=500, shuffle=True,
generator=torch.Generator().manual_seed(0))`` and kept the first 20 batches. That is *not*
``torch.randperm(50000, generator=Generator().manual_seed(0))[:10000]``: each DataLoader
iterator first draws its workers' base seed (one int64) from the same generator, and only then
does the RandomSampler draw its permutation. ``paper_subset_indices`` (``subset``) reproduces
the DataLoader; the tests check it against a real DataLoader.

Each image is decoded once (``Resize(256)``, ``CenterCrop(224)``, kept as uint8) and the subset
is stored as one ``ImageSet`` file, in subset order, so that every evaluation job reads the
same tensor and decodes nothing. With per-model input pipelines (``layercrit.study.pipelines``) the
same subset is stored once per pipeline, each file resized and cropped as its pipeline says.
Decoding is ``decode``'s, the prepared file ``prepare``'s.

Accepted layouts of the validation folder (``layout``):

- class folders: ``val/<wnid>/*.JPEG`` (what the usual ``valprep.sh`` produces);
- flat: ``val/ILSVRC2012_val_00000001.JPEG`` … plus a label file, either Kaggle's
  ``LOC_val_solution.csv`` or the devkit's ``ILSVRC2012_validation_ground_truth.txt`` with its
  ``meta.mat``. The flat layout is ordered exactly as the class-folder layout of the same images
  would be (by wnid, then file name), so both give the same subset.
"""

from layercrit.imagenet.decode import ImageDecodeError, decode_images, default_workers, preprocess
from layercrit.imagenet.layout import (
    DEVKIT_DIR,
    DEVKIT_LABELS,
    IMAGENET_VAL_IMAGES,
    KAGGLE_LABELS,
    LABEL_SEARCH_LEVELS,
    LAYOUT_CLASS_FOLDERS,
    LAYOUT_FLAT,
    LAYOUT_HINT,
    ImageNetLayoutError,
    Listing,
    find_labels_file,
    list_validation_images,
    read_labels_file,
    read_meta_mat,
    scan_validation_folder,
)
from layercrit.imagenet.prepare import (
    FOLDER_WORDS,
    HEADER_BUDGET,
    FolderWords,
    prepare_pipeline_images,
    prepare_validation_set,
    read_metadata,
    sidecar_path,
)
from layercrit.imagenet.subset import paper_subset_indices

# the names of the former module layercrit/imagenet.py (HEADER_BUDGET is read in prepare: patch it there)
__all__ = [
    "DEVKIT_DIR", "DEVKIT_LABELS", "FOLDER_WORDS", "HEADER_BUDGET", "IMAGENET_VAL_IMAGES", "KAGGLE_LABELS",
    "LABEL_SEARCH_LEVELS", "LAYOUT_CLASS_FOLDERS", "LAYOUT_FLAT", "LAYOUT_HINT", "FolderWords", "ImageDecodeError",
    "ImageNetLayoutError", "Listing", "decode_images", "default_workers", "find_labels_file", "list_validation_images",
    "paper_subset_indices", "prepare_pipeline_images", "prepare_validation_set", "preprocess", "read_labels_file",
    "read_meta_mat", "read_metadata", "scan_validation_folder", "sidecar_path",
]  # fmt: skip
