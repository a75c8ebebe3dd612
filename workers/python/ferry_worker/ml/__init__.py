"""The ML workers: the SDXL worker (router, seven instructors, pipeline) on the SDK.

Needs the ML dependencies of ``workers/requirements-ml.txt`` (torch, diffusers, ...); the
worker itself is :mod:`ferry_worker.ml.worker`. See docs/ml-workers.md.
"""
