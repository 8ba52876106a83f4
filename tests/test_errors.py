"""Every public exception is a BayesBridgeError and a matching built-in."""

from __future__ import annotations

import inspect

import pytest

from bayesbridge import errors


@pytest.mark.parametrize("name", [n for n in errors.__all__ if not n.startswith("check_")])
def test_public_errors_subclass_base(name):
    cls = getattr(errors, name)
    assert inspect.isclass(cls) and issubclass(cls, errors.BayesBridgeError)
    if cls is not errors.BayesBridgeError:
        builtin_bases = {ValueError, TypeError, OSError, RuntimeError, FloatingPointError, KeyError}
        assert any(issubclass(cls, b) for b in builtin_bases), name


def test_variable_not_found_message_is_unquoted():
    exc = errors.VariableNotFoundError("variables: 'x' not found")
    assert str(exc) == "variables: 'x' not found"
