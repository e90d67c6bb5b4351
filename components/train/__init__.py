"""The train component: component.py (the KFP adapter), README.md, tests/."""
