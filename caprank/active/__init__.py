"""Active learning: pick the served intents the ranker is least sure of, queue them for
labelling (``uncertainty``), and bring the answers back as labels (``queue``)."""
