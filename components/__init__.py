"""KFP components: each a thin ``@dsl.component`` adapter over one caprank stage function.

The functions here are plain Python; ``pipelines.training`` turns them into components
with the images named in the config, so images are set at compile time, not import time.
"""
