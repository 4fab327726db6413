"""Every exception the package raises derives from one base, ``GenericConnectorError``."""

import importlib
import inspect
import pkgutil

import generic_connector
from generic_connector.errors import GenericConnectorError


def test_every_exception_of_the_package_derives_from_the_one_base() -> None:
    found = {}
    for module_info in pkgutil.walk_packages(generic_connector.__path__, "generic_connector."):
        if module_info.name.endswith("__main__"):
            continue  # running it is the command line
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    assert len(found) >= 20  # the walk found the package's exceptions
    strays = sorted(
        name for name, cls in found.items() if not issubclass(cls, GenericConnectorError)
    )
    assert strays == []
