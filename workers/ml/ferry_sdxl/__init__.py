"""ferry_sdxl: the SDXL worker (router, seven instructors, pipeline) on the ferry_worker SDK.

An application of the SDK, packaged apart from it so that installing ``ferry-worker`` pulls
no ML code. It needs the ML dependencies of ``workers/requirements-ml.txt`` (torch,
diffusers, ...); the worker itself is :mod:`ferry_sdxl.worker`, started by
``python -m ferry_sdxl.main --worker pipeline_manager``. See docs/ml-workers.md.

Importing this package imports nothing heavy: :mod:`ferry_sdxl.request` (the request
schema) needs only ``jsonschema`` and the SDK.
"""
