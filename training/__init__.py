"""Training FaceSnap / Diff-PC weights: dataset preparation, the accelerate trainer, and export.

Nothing here is imported by the nodes. Run it through ``scripts/facesnap_train.py`` (subcommands ``prepare``,
``train``, ``export``); see ``training/README.md``.
"""
