"""The package list, computed: pyproject.toml holds everything else.

The checkout keeps the kernel in platform/nestor/ and the first-party sub-apps in subapps/;
installed they are `nestor` and `nestor_subapps`. Folders of templates, static files and
migrations are listed as packages too (namespace packages, no __init__.py), as setuptools
wants for data directories, so a new folder ships without editing this file.
"""

from setuptools import find_namespace_packages, setup

EXCLUDE = ["*__pycache__*"]
kernel = find_namespace_packages("platform", include=["nestor", "nestor.*"], exclude=EXCLUDE)
subapps = find_namespace_packages(".", include=["subapps", "subapps.*"], exclude=EXCLUDE)

setup(packages=kernel + ["nestor_subapps" + name.removeprefix("subapps") for name in subapps])
