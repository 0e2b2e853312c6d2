"""Writers of the synthetic world, one module per on-disk format.

ImageNet folder (:mod:`.imagenet`), ADE20K (:mod:`.ade`), COCO (:mod:`.coco`) and Pascal
VOC 2012 (:mod:`.voc`) are the subsets of :func:`pretrain.synthetic.generate`; CIFAR-10/100
python pickles (:mod:`.cifar`) and Tiny ImageNet (:mod:`.tiny_imagenet`) are written by
:func:`pretrain.synthetic.write_synthetic_small`. Every writer renders through
:func:`pretrain.synthetic.scenes.build_scene`.
"""
