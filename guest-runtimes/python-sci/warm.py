# Run once at `sandlot prepare`, in a fresh python-sci instance, before its
# memory is baked into the module every session starts from (src/sci/): what
# this imports is ready in every session at no cost.
import sys, types

def _module(name, filename, source):
    module = types.ModuleType(name)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    sys.modules[name] = module

for _name, _source in SOURCES:
    _module(_name, _name + ".py", _source)
del _name, _source, _module

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
import numpy, pandas, scipy, scipy.stats
import sklearn, sklearn.linear_model, sklearn.ensemble, sklearn.tree, sklearn.model_selection, sklearn.metrics
import sklearn.preprocessing, sklearn.cluster, sklearn.neighbors
import statsmodels.api
import csv, json, math, random, statistics, io, base64


def _show(*args, **kwargs):
    # With no screen, plt.show() hands each open figure to the client: it is
    # saved as the PNG placeholder "figure-N" (MCP returns it as an image).
    import sandlot
    for number in matplotlib.pyplot.get_fignums():
        sandlot.set_placeholder(f"figure-{number}", matplotlib.pyplot.figure(number))
    matplotlib.pyplot.close("all")


matplotlib.pyplot.show = _show
del _show


def _entry_points():
    # What the host's turns call: `__import__('_sandlot_sci').run(...)` and so
    # on, leaving no names behind in `__main__`. A non-zero status becomes the
    # turn's own (SystemExit); the session goes on.
    import json as _json
    import _sandlot_driver as driver
    import _sandlot_host as host

    module = types.ModuleType("_sandlot_sci")
    fresh = [True]

    def reseed():
        # Every session starts from the same baked memory: give each its own
        # random state (from the host's secure random) before any user code.
        if fresh[0]:
            import random, numpy
            random.seed()
            numpy.random.seed()
            fresh[0] = False

    def run(payload):
        reseed()
        p = _json.loads(payload)
        ended(driver.run(p["files"], p["main_file"], p["args"], p["env"], p["context"]))

    def eval_code(code):
        reseed()
        ended(driver.eval_code(code))

    def ended(status):
        # The trailing expression's value goes back as the turn's answer.
        value = driver.last_value()
        if value is not None:
            host.call("result", ok=value)
        if status:
            raise SystemExit(status)

    def predict(name, input_json):
        try:
            answer = {"ok": driver.predict(name, input_json)}
        except driver.PredictionError as e:
            answer = {"error": str(e)}
        host.call("result", **answer)

    def train(name, input_json):
        try:
            driver.train(name, input_json)
            answer = {"ok": "null"}
        except driver.PredictionError as e:
            answer = {"error": str(e)}
        host.call("result", **answer)

    module.run, module.eval_code, module.predict, module.train = run, eval_code, predict, train
    sys.modules["_sandlot_sci"] = module


_entry_points()
del _entry_points

# Last: every object made until now is listed, to be made immortal before
# this memory is baked (see census in _sandlot_driver.py).
_IMMORTAL = sys.modules["_sandlot_driver"].census()
