"""sandlot's host calls over the component's WIT imports (see wit/sandlot.wit).
python-sci has a file of the same name and functions over its JSON door."""

from componentize_py_types import Err
from wit_world.imports import engine as _engine
from wit_world.imports import models as _models
from wit_world.imports import placeholders as _placeholders
from wit_world.imports import stats as _stats


class HostError(Exception):
    """The host refused a call; the message says why."""


def _call(function, *args):
    try:
        return function(*args)
    except Err as e:
        raise HostError(e.value) from None


def set_placeholder(name, json_text):
    _call(_placeholders.set, name, json_text)


def get_placeholder(name):
    return _placeholders.get(name)


def register_model(name):
    _call(_models.register, name)


def describe(numbers):
    s = _call(_stats.describe, numbers)
    return {"count": s.count, "mean": s.mean, "std": s.std, "min": s.min,
            "25%": s.q1, "50%": s.median, "75%": s.q3, "max": s.max}


def engine_command(command, args_json):
    return _call(_engine.command, command, args_json)
