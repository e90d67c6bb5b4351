"""Capability features (daily, point-in-time snapshots) and the Feast glue.

``compute`` and ``graph`` compute; ``stage`` is the pipeline stage (build, publish);
``definitions`` and ``store`` hold everything Feast (imported only when publishing or
reading, since Feast is slow to import).
"""
