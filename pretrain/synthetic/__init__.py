"""The synthetic world: a deterministic world of textured shapes on cluttered backgrounds.

The world has ``K`` object classes (:mod:`.world`); every class has its own shape, texture
and typical hue, so that a small network learns it quickly, while the hue jitter between
neighbouring classes overlaps so that the mean colour alone is not enough. Scenes are drawn
per image from a seeded generator (:mod:`.scenes`), rendered by one core (:mod:`.render`:
:mod:`.shapes`, :mod:`.textures` and :mod:`.background` composited in drawing order) and
written in the layouts of real datasets (:mod:`.formats`), so that the same loaders and
evaluation code read both:

* :func:`generate` (:mod:`.generator`): ``imagenet/{train,val}/<class>/<class>_<idx>.JPEG``,
  ``ade/`` (ADE20K, 0 = other), ``coco/`` (instances JSON with polygons/RLE) and ``voc/``
  (Pascal VOC 2012), plus ``classes.json`` and the manifest ``synthetic.json``;
* :func:`write_synthetic_small` (:mod:`.small`): CIFAR-10 / CIFAR-100 python pickles and
  Tiny ImageNet folders at 32 / 64 px.

The command line is ``vitmix-make-synthetic`` (:mod:`.cli`). Only numpy and PIL are needed;
pycocotools is imported lazily for the COCO set.
"""

from .formats.coco import coco_annotations, mask_to_coco_segmentation
from .formats.voc import voc_palette
from .generator import SUBSETS, default_params, generate
from .masks import mask_to_polygons
from .objects import ObjectSpec, classification_objects, multi_object_objects, sample_object
from .render import Scene, render_scene
from .scenes import build_scene, image_rng
from .small import SMALL_FORMATS, write_synthetic_small
from .world import GENERATOR_VERSION, MAX_CLASSES, SHAPES, TEXTURES, ClassSpec, class_names, class_specs

__all__ = [
    "GENERATOR_VERSION", "SHAPES", "TEXTURES", "SUBSETS", "SMALL_FORMATS", "MAX_CLASSES",
    "ClassSpec", "ObjectSpec", "Scene",
    "class_specs", "class_names", "image_rng", "sample_object", "classification_objects",
    "multi_object_objects", "render_scene", "build_scene",
    "mask_to_polygons", "mask_to_coco_segmentation", "coco_annotations", "voc_palette",
    "default_params", "generate", "write_synthetic_small",
]
