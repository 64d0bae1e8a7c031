"""Lazy re-exports: ``tenfold.optim.TAM`` imports ``tenfold.optim.tam`` only when first used, so a
package ``__init__`` lists its public names once and importing one method never imports the others."""

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """Return a module ``__getattr__`` resolving each name in ``exports`` from its submodule."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__


def lazy_dir(package: str, exports: dict[str, str]):
    """Return a module ``__dir__`` listing the lazy exports beside what is already loaded, so
    ``dir(package)`` and tab completion show the public names before they are first used."""

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __dir__
