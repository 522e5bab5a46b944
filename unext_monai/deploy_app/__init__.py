"""MONAI Deploy application: segment 2D images with a released bundle's ``models/model.ts``
(``python -m unext_monai.deploy_app -i IN -o OUT -m bundle/NAME``; ``docs/integrations.md``). :mod:`.cli` checks
everything it can before the SDK is imported; :mod:`.app` is the application. ``app.yaml`` and ``requirements.txt``
are what MONAI Deploy's packager reads from this folder."""
