"""Data shipped inside the package (see README.md here): the embedded CIFAR-10 subset and CIFAR-10N's labels.

No code: :func:`noisysam.core.assets.find_data_file` reads these files through :mod:`importlib.resources`.
"""
