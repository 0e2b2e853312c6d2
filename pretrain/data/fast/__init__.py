"""Training data paths other than timm's PIL transforms, selected by ``data.pipeline``.

* ``timm`` (the default): :func:`pretrain.data.folders.build_transforms`, timm's ``create_transform``; workers
  hand normalized, erased float tensors.
* ``fast``: :mod:`.dataset`. The same augmentation parameters from the same per-sample random streams
  (timm's RandomResizedCrop draws, torchvision's flip draw, timm's own RandAugment object), but the JPEG is
  decoded at the smallest libjpeg-turbo DCT scale that still covers the crop at the output size
  (:mod:`.decode`), the crop is resampled straight from the decoded image (PIL bicubic with a box), and the
  workers hand ``(H, W, 3)`` uint8 tensors. Normalization and random erasing run batched on the device in
  the training loop (:class:`.device.DeviceAugment`; the erasing boxes have timm's distribution, drawn from
  a generator seeded by ``(seed, rank, epoch, batch)``).

* ``fast_device``: the workers only decode, crop and resample; the flip and RandAugment run batched on the
  device too, before normalization and erasing (:class:`.randaug.TensorRandAugment`: timm's op and magnitude
  distribution, Pillow's arithmetic per op), with draws from the same per-batch generator.

* ``gpu``: the workers only read the files (:mod:`.gpu`); the JPEG decode (nvjpeg via torchvision), the
  RandomResizedCrop draw and the antialiased bicubic resize run batched on the device, then ``fast_device``'s
  device stages. The same code runs on the CPU device (CI).

``tools/bench_loader.py`` measures both per core and per stage.
"""
PIPELINES = ("timm", "fast", "fast_device", "gpu")
