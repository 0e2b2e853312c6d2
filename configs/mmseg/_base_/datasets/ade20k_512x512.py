# ADE20K (SceneParsing, ADEChallengeData2016), 512x512 crops.
# Layout: {data_root}/images/{training,validation}/*.jpg and
#         {data_root}/annotations/{training,validation}/*.png (0 = other,
#         ignored through reduce_zero_label).
# CheckedADE20KDataset is MMSeg's ADE20KDataset plus file checks (missing
# folders, images without label maps -> an error naming the path); CheckSegMap
# refuses label maps with values outside the class range or another size than
# their image, naming the file (downstream/mmseg/data.py).
# To use another location, edit data_root in the leaf config or pass
#   --cfg-options train_dataloader.dataset.data_root=DIR \
#                 val_dataloader.dataset.data_root=DIR test_dataloader.dataset.data_root=DIR
dataset_type = 'CheckedADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap'),
    dict(
        type='RandomResize',
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    # annotations are loaded after Resize: evaluation uses the original size
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap'),
    dict(type='PackSegInputs'),
]
# multi-scale + flip evaluation (`mim test mmseg CONFIG --checkpoint X --tta`):
# the test scale (2048, 512) times each ratio, each with and without a
# horizontal flip; SegTTAModel averages the 12 softmax maps at the original
# size. (The ratios multiply the test scale, as in Segmenter/BEiT and MMSeg
# 0.x, not the raw image size.)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(2048 * r), int(512 * r)),
                  keep_ratio=True)
             for r in img_ratios],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='CheckSegMap')],
            [dict(type='PackSegInputs')],
        ]),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
