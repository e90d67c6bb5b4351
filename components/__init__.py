"""KFP components, one folder each: ``<name>/component.py`` (a thin adapter over one
caprank stage function, Google-style ``Args:`` that KFP shows as input descriptions),
``<name>/README.md`` (inputs, outputs, what it does) and ``<name>/tests/``.

The functions are plain Python; ``pipelines.training`` turns them into components with
the images named in the config, so images are set at compile time, not import time.
``runtime`` holds what every component does around its stage call.
"""
