"""The update component: component.py (the KFP adapter), README.md, tests/."""
