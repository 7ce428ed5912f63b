"""Package discovery, the one part of the build that `pyproject.toml` cannot state (the rest lives there).

`experiments/configs/` is installed as `lcomp.experiment_configs`: the config files keep their place next
to the experiments, and `lcomp.configs` imports them from the installed package, so a plain `pip install .`
(no repository on disk) finds them as well as `pip install -e .` does. pyproject's
`[tool.setuptools.packages.find]` only finds packages in their own folders and cannot add a mapped one,
hence the explicit list: every `lcomp*` package found on disk, plus the mapped configs package.
"""

from setuptools import find_namespace_packages, setup

CONFIG_PACKAGE = "lcomp.experiment_configs"

setup(
    # Namespace discovery, as pyproject's `packages.find` did: the data folders (zoo, reference_data) too.
    packages=find_namespace_packages(include=["lcomp*"]) + [CONFIG_PACKAGE],
    package_dir={CONFIG_PACKAGE: "experiments/configs"},
)
