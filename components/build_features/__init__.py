"""The build_features component: component.py (the KFP adapter), README.md, tests/."""
