"""KFP adapters: the training pipeline, its submission and schedule, GPU placement."""
