"""The transfer learner: a pure library over numpy and TensorFlow.

Never imports flask, label_studio_sdk, apscheduler, or reads the environment; usable from a notebook.
"""
