"""What several test suites, the benchmarks and scripts share, imported as ``tests.support.<module>``.

- :mod:`tests.support.served`: ``juicer serve`` as a real subprocess (:class:`ServedJuicer`: start, stop, kill,
  restart) and the environment and data folder it runs on;
- :mod:`tests.support.in_process`: a juicer wired in the test process against the session's real Label Studio
  (:func:`in_process_juicer`: seeded demo, own project, HTTP on a thread, webhook registered);
- :mod:`tests.support.images`: synthetic PNGs and store items backed by them;
- :mod:`tests.support.reference`: the fixed inputs of the PyTorch reference fixture (numpy, Pillow and
  scikit-image only, so ``scripts/make_torch_reference.py`` imports it from a venv with torch and nothing else).

Nothing here imports at package level: each module pulls in only what it needs.
"""
