"""The synthetic world: a deterministic world of objects made of parts on cluttered backgrounds.

The world has ``K`` object classes (:mod:`.world`); a class is a layout of parts on a 3 x 3
grid, and the parts' shapes, textures and hues are shared with other classes, so that the
class is told only by combining patches across the object, not by the colour or texture of
one patch. Scenes add loose parts as clutter and as occluders. Scenes are drawn
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
from .objects import BACKGROUND, ObjectSpec, Part, classification_objects, loose_part, multi_object_objects, sample_object
from .render import Scene, render_scene
from .scenes import build_scene, image_rng
from .small import SMALL_FORMATS, write_synthetic_small
from .world import (GENERATOR_VERSION, MAX_CLASSES, NUM_HUES, PART_SHAPES, TEXTURES, ClassSpec, class_names,
                    class_specs, hue_triple, layouts)

__all__ = [
    "GENERATOR_VERSION", "PART_SHAPES", "TEXTURES", "NUM_HUES", "BACKGROUND", "SUBSETS", "SMALL_FORMATS", "MAX_CLASSES",
    "ClassSpec", "ObjectSpec", "Part", "Scene", "hue_triple", "layouts", "loose_part",
    "class_specs", "class_names", "image_rng", "sample_object", "classification_objects",
    "multi_object_objects", "render_scene", "build_scene",
    "mask_to_polygons", "mask_to_coco_segmentation", "coco_annotations", "voc_palette",
    "default_params", "generate", "write_synthetic_small",
]
