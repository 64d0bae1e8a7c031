import pytest

from tenfold import registry


def test_toy_joins_through_the_environment_and_stays_hidden():
    assert registry.get("toy").hidden
    assert "toy" not in registry.names() and "toy" in registry.names(include_hidden=True)
    assert "tam" in registry.names()


def test_an_unimportable_extra_module_is_named(monkeypatch):
    monkeypatch.setenv(registry.EXTRA_MODULES_VAR, "tests.no_such_module")
    registry._discover.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="TENFOLD_EXPERIMENTS names 'tests.no_such_module'"):
            registry.names()
    finally:
        monkeypatch.undo()
        registry._discover.cache_clear()
    assert "toy" in registry.names(include_hidden=True)
