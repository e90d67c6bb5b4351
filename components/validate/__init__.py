"""The validate component: component.py (the KFP adapter), README.md, tests/."""
