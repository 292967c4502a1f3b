"""The host's capabilities as user code sees them: `import sandlot`.

Every function here is a thin wrapper over one host call (see wit/sandlot.wit),
made through `_sandlot_host`: WIT imports in the component guest, the JSON
door in python-sci. The logic lives in the host. Values cross as JSON, so anything `json.dumps`
accepts may be saved.
"""

import json

import _sandlot_host as _host
from _sandlot_host import HostError

__all__ = [
    "SandlotError", "EngineError", "set_placeholder", "get_placeholder",
    "save_model", "stats", "engine", "context",
]

#: The JSON context the client gave this session, or None. Set before each run.
context = None

_models_held = {}


class SandlotError(Exception):
    """The host refused a request (too large, malformed, over a limit)."""


class EngineError(SandlotError):
    """The game engine answered a command with an error."""


def _json(value, what):
    try:
        return _dumps(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serialisable: {e}") from None


def _to_jsonable(value):
    # A matplotlib figure as a PNG; pandas DataFrames as {column: [values]};
    # numpy arrays and scalars, pandas Series: anything that can list itself.
    if callable(getattr(value, "savefig", None)):
        import base64, io
        png = io.BytesIO()
        value.savefig(png, format="png")
        return {"type": "image/png", "base64": base64.b64encode(png.getvalue()).decode()}
    if hasattr(value, "columns") and hasattr(value, "to_dict"):
        return value.to_dict(orient="list")
    for method in ("tolist", "to_dict"):
        if hasattr(value, method):
            return getattr(value, method)()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON-serialisable")


# json.dumps(value, allow_nan=False, default=_to_jsonable) builds a new encoder
# on every call: a third of a small prediction's time. The C encoder it builds
# is made once here instead, with the same arguments, and its circular-reference
# marks are cleared when an encode is cut short (the C encoder leaves them set).
# A re-entered encode (a `tolist` that saves a placeholder) takes the slow path.
_markers = {}
_encoder = None
_encoding = False
if json.encoder.c_make_encoder is not None and json.encoder.c_encode_basestring_ascii is not None:
    _encoder = json.encoder.c_make_encoder(
        _markers, _to_jsonable, json.encoder.c_encode_basestring_ascii,
        None, ": ", ", ", False, False, False)


def _dumps(value):
    global _encoding
    if _encoder is None or _encoding:
        return json.dumps(value, allow_nan=False, default=_to_jsonable)
    _encoding = True
    try:
        return "".join(_encoder(value, 0))
    except BaseException:
        _markers.clear()
        raise
    finally:
        _encoding = False


# json.loads skips leading and trailing whitespace with a regex each: one scan
# does for input with none, and anything else (whitespace, an error to report)
# goes to json.loads.
_scan_once = json.decoder.JSONDecoder().scan_once


def _loads(text):
    try:
        value, end = _scan_once(text, 0)
    except (StopIteration, json.JSONDecodeError, RecursionError):
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def set_placeholder(name, value):
    """Saves `value` under `name` for clients to read after the run."""
    if not isinstance(name, str):
        raise TypeError("placeholder name must be a str")
    try:
        _host.set_placeholder(name, _json(value, "placeholder value"))
    except HostError as e:
        raise SandlotError(str(e)) from None


def get_placeholder(name):
    """The value saved under `name`, or None."""
    if not isinstance(name, str):
        raise TypeError("placeholder name must be a str")
    text = _host.get_placeholder(name)
    return None if text is None else json.loads(text)


def save_model(name, model):
    """Keeps `model` (an object with .predict(x), or a callable) for later predictions."""
    if not isinstance(name, str):
        raise TypeError("model name must be a str")
    if not (callable(getattr(model, "predict", None)) or callable(model)):
        raise TypeError("a model must have a .predict(x) method or be callable")
    try:
        _host.register_model(name)
    except HostError as e:
        raise SandlotError(str(e)) from None
    _models_held[name] = model


def stats(values):
    """count, mean, std, min, 25%, 50%, 75% and max of a list of numbers."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise TypeError(f"stats needs a list of numbers: {e}") from None
    try:
        return _host.describe(numbers)
    except HostError as e:
        raise ValueError(str(e)) from None


def engine(command, args=None):
    """Sends a command to the client's game engine and returns its answer."""
    if not isinstance(command, str):
        raise TypeError("engine command must be a str")
    try:
        answer = _host.engine_command(command, _json(args, "engine args"))
    except HostError as e:
        raise EngineError(str(e)) from None
    return json.loads(answer)


def _model(name):
    model = _models_held.get(name)
    if model is None:
        raise KeyError(f"no model named {name!r}; saved models: {sorted(_models_held)}")
    return model


def _predict(name, input_json):
    model = _model(name)
    data = _loads(input_json)
    predict = getattr(model, "predict", None)
    result = predict(data) if callable(predict) else model(data)
    return _dumps(result)


def _train(name, input_json):
    model = _model(name)
    for method in ("partial_fit", "train"):
        fit = getattr(model, method, None)
        if callable(fit):
            fit(_loads(input_json))
            return
    raise TypeError(f"model {name!r} has no partial_fit(values) or train(values) method to train with")
