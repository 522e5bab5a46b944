"""MONAI Deploy application: 2D images segmented with a released bundle's ``models/model.ts`` (:mod:`.cli`,
:mod:`.app`); ``app.yaml`` and ``requirements.txt`` are what MONAI Deploy's packager reads from this folder."""
