"""The sandlot Python guest: CPython 3.14 as a component exporting `run`, `eval`, `predict`, `train`
(the logic is in _sandlot_driver.py, shared with python-sci).

componentize-py runs this module's top level at build time and snapshots the heap,
so everything imported here is ready at instantiation and nothing else of the
stdlib exists at run time. That is why the whole usable stdlib is imported below.

No exception may escape an export: that traps and kills the instance. Each export
catches BaseException and turns it into an exit status plus a traceback on stderr.
"""

import pkgutil
import sys

import _sandlot_driver as driver
import wit_world
from componentize_py_types import Err
from wit_world.imports import input as _input
from wit_world.imports.types import Outcome

# Modules that cannot work in this sandbox, or are only tests and GUIs.
_SKIP = {
    "test", "tkinter", "turtle", "turtledemo", "idlelib", "ensurepip", "venv", "ctypes",
    "curses", "dbm", "lib2to3", "msilib", "msvcrt", "winreg", "winsound", "_winapi",
    "nt", "_overlapped", "multiprocessing", "concurrent", "readline", "pydoc_data",
    "antigravity", "this", "__phello__", "_pyrepl", "sqlite3", "ssl", "_ssl", "asyncio",
}


def _import_stdlib():
    for name in sorted(sys.stdlib_module_names):
        if name in _SKIP or name.startswith("_test"):
            continue
        try:
            module = __import__(name)
        except BaseException:
            continue
        path = getattr(module, "__path__", None)
        if not path:
            continue
        for info in pkgutil.walk_packages(path, name + ".", onerror=lambda _: None):
            if any(part in _SKIP or part.startswith("test") for part in info.name.split(".")):
                continue
            try:
                __import__(info.name)
            except BaseException:
                pass


_import_stdlib()


class WitWorld(wit_world.WitWorld):
    # componentize-py may make a new WitWorld for each export call: the live
    # state of the session is kept in _sandlot_driver.py, at module level.

    def run(self, program):
        files = {f.name: f.content for f in program.files}
        status = driver.run(files, program.main_file, program.args, program.env, _input.context())
        return Outcome(status, driver.last_value())

    def eval(self, code):
        return Outcome(driver.eval_code(code), driver.last_value())

    def predict(self, name, input):
        try:
            return driver.predict(name, input)
        except driver.PredictionError as e:
            raise Err(str(e))

    def train(self, name, input):
        try:
            driver.train(name, input)
        except driver.PredictionError as e:
            raise Err(str(e))


# Last: every object made until now is listed, to be made immortal when
# sandlot compiles this guest (see census in _sandlot_driver.py).
_IMMORTAL = driver.census()
