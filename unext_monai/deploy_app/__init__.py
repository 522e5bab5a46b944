"""MONAI Deploy application: segment 2D images with a released bundle's TorchScript model (``models/model.ts``).

Run it in an environment with ``monai-deploy-app-sdk`` (``.ci/deploy_env.sh``; ``docs/integrations.md``)::

    python -m unext_monai.deploy_app -i IMAGE_OR_FOLDER -o OUTPUT_FOLDER -m bundle/NAME

- :mod:`unext_monai.deploy_app.cli`: the command line; checks the arguments and the input files before the SDK is
  imported, and exits non-zero when any input was not segmented;
- :mod:`unext_monai.deploy_app.app`: the application (its operators and graph), imported only to run it;
- ``app.yaml`` and ``requirements.txt``: what MONAI Deploy's packager (``monai-deploy package``) reads to build a
  MONAI Application Package from this folder.

Nothing heavy is imported here.
"""

__all__: list[str] = []
