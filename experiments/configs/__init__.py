"""The experiment configs that ship with lcomp, installed as the package `lcomp.experiment_configs`.

The files stay here, one `<name>.py` with `get_config(variant)` per codec, but `pyproject.toml`/`setup.py`
map this folder onto `lcomp.experiment_configs`, so `lcomp.configs.load_config("johnston2018:tiny")`
imports them from the installed package: a plain `pip install .` trains without the repository, and no
config edits `sys.path`. Modules starting with `_` hold shared pieces and are not configs themselves.
"""
