"""Every public module, function and class of jaxdiff appears in the built API reference: the names of the
package (modules not starting with ``_``; in each, the functions and classes defined there whose names do
not start with ``_``) against the objects of ``_build/html/objects.inv``. Run after ``sphinx-build``:

    python docs/check_api.py docs/_build/html
"""

import importlib
import inspect
import pkgutil
import sys

from sphinx.util.inventory import InventoryFile


def public_names():
    import jaxdiff

    names = {"jaxdiff"}
    for info in pkgutil.walk_packages(jaxdiff.__path__, "jaxdiff."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        mod = importlib.import_module(info.name)
        names.add(info.name)
        for name, obj in vars(mod).items():
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) \
                    and getattr(obj, "__module__", None) == info.name:
                names.add(f"{info.name}.{name}")
    return names


def documented(build_dir: str):
    with open(f"{build_dir}/objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    return {name for kind, objs in inv.items() if kind.startswith("py:") for name in objs}


if __name__ == "__main__":
    missing = sorted(public_names() - documented(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
    if missing:
        print(f"{len(missing)} public names are not in the API reference:", *missing[:50], sep="\n  ")
        sys.exit(1)
    print(f"check_api: all {len(public_names())} public names of jaxdiff are in the API reference")
