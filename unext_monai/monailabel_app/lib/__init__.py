"""Tasks of the UNeXt MONAI Label app: :class:`lib.infers.UNeXtInferTask` and :class:`lib.trainers.UNeXtTrainTask`."""
