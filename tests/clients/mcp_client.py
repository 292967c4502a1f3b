"""Drives sandlot's MCP face with the official MCP client (PyPI `mcp`), as
an agent's host does: `stdio SANDLOT_BINARY` starts `sandlot mcp`;
`http URL TOKEN [OTHER_TOKEN]` connects to `/mcp` of a running server (and
then, as another client with OTHER_TOKEN, tries to use the first one's
session: call "other_client"). Prints one JSON
object: the server's name, its tools, and each call's result.

An argument "$NAME" is the session_id the call named NAME returned.
"""

import asyncio
import base64
import json
import os
import sys

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

PLOT = "import matplotlib.pyplot as plt\nimport sandlot\nfig, ax = plt.subplots()\nax.plot([1, 3, 2])\nsandlot.set_placeholder('plot', fig)"

CALLS = [
    ("python", "run_code", {"language": "python", "code": "import sys\nprint(6 * 7)\nprint('oops', file=sys.stderr)"}),
    ("javascript", "run_code", {"language": "javascript", "code": "console.log([1, 2, 3].map((x) => x * 2).join(','))"}),
    ("lua", "run_code", {"language": "lua", "code": "print(string.rep('ab', 3))"}),
    ("stdin", "run_code", {"language": "python", "code": "print(input()[::-1])", "stdin": "olleh\n"}),
    ("exit_code", "run_code", {"language": "python", "code": "raise SystemExit(3)"}),
    ("timeout", "run_code", {"language": "javascript", "code": "for (;;) {}", "timeout_s": 1}),
    ("output", "run_code", {"language": "python", "code": "while True: print('x' * 1000)"}),
    ("memory", "run_code", {"language": "python", "code": "x = bytearray(1 << 30)"}),
    ("unknown_language", "run_code", {"language": "cobol", "code": "DISPLAY 'HI'."}),
    ("missing_code", "run_code", {"language": "python"}),
    ("bad_timeout", "run_code", {"language": "python", "code": "pass", "timeout_s": -1}),
    # Numbers a client may send for seconds: the largest, none at all, text, too small.
    ("huge_timeout", "run_code", {"language": "python", "code": "print('huge')", "timeout_s": 1e308}),
    ("nan_timeout", "run_code", {"language": "python", "code": "print('nan')", "timeout_s": float("nan")}),
    ("text_timeout", "run_code", {"language": "python", "code": "pass", "timeout_s": "NaN"}),
    ("zero_timeout", "run_code", {"language": "python", "code": "pass", "timeout_s": 0}),
    ("tiny_timeout", "run_code", {"language": "python", "code": "pass", "timeout_s": 1e-300}),
    ("bool_timeout", "session_start", {"language": "lua", "timeout_s": True}),
    ("negative_session_timeout", "session_start", {"language": "lua", "timeout_s": -1e308}),
    ("huge_session", "session_start", {"language": "lua", "timeout_s": 1e308}),
    ("huge_session_cell", "session_exec", {"session_id": "$huge_session", "code": "1 + 1"}),
    ("huge_session_close", "session_close", {"session_id": "$huge_session"}),
    ("languages", "list_languages", {}),
    ("after_errors", "run_code", {"language": "python", "code": "print('still up')"}),
    # The value of a trailing expression.
    ("value_python", "run_code", {"language": "python", "code": "x = 6\nx * 7"}),
    ("value_javascript", "run_code", {"language": "javascript", "code": "const a = [1, 2];\na.map((x) => x * 3)"}),
    ("value_lua", "run_code", {"language": "lua", "code": "return 1 + 1, 'two'"}),
    ("value_sci", "run_code", {"language": "python-sci", "code": "import numpy as np\nnp.arange(3).sum()"}),
    ("value_none", "run_code", {"language": "python", "code": "print('hi')"}),
    ("plot_once", "run_code", {"language": "python-sci", "code": PLOT}),
    ("plot_show", "run_code", {"language": "python-sci", "code": "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.figure()\nplt.bar([1], [2])\nplt.show()"}),
    ("files", "run_code", {"language": "python", "code": "import helper\nhelper.greet()", "files": {"helper.py": "def greet():\n    return 'hi from helper'"}}),
    ("files_escape", "run_code", {"language": "python", "code": "pass", "files": {"../outside.py": "x = 1"}}),
    # Notebook sessions: state kept from one call to the next.
    ("py", "session_start", {"language": "python"}),
    ("py_define", "session_exec", {"session_id": "$py", "code": "import math\ndef area(r):\n    return math.pi * r * r"}),
    ("py_use", "session_exec", {"session_id": "$py", "code": "round(area(2), 3)"}),
    ("py_error", "session_exec", {"session_id": "$py", "code": "1 / 0"}),
    ("py_after_error", "session_exec", {"session_id": "$py", "code": "area(1) > 3"}),
    ("py_save", "session_exec", {"session_id": "$py", "code": "import sandlot\nsandlot.set_placeholder('answer', {'n': 42})"}),
    ("py_get", "session_get", {"session_id": "$py", "name": "answer"}),
    ("py_get_missing", "session_get", {"session_id": "$py", "name": "nothing"}),
    ("js", "session_start", {"language": "javascript"}),
    ("js_define", "session_exec", {"session_id": "$js", "code": "function twice(x) { return 2 * x }\nlet count = 1"}),
    ("js_use", "session_exec", {"session_id": "$js", "code": "count += 1; twice(count)"}),
    ("lua_session", "session_start", {"language": "lua"}),
    ("lua_define", "session_exec", {"session_id": "$lua_session", "code": "function sq(x) return x * x end"}),
    ("lua_use", "session_exec", {"session_id": "$lua_session", "code": "sq(7)"}),
    ("sci", "session_start", {"language": "python-sci"}),
    ("sci_frame", "session_exec", {"session_id": "$sci", "code": "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})"}),
    ("sci_use", "session_exec", {"session_id": "$sci", "code": "int(df['a'].sum())"}),
    ("sci_plot", "session_exec", {"session_id": "$sci", "code": PLOT}),
    ("sci_get_plot", "session_get", {"session_id": "$sci", "name": "plot"}),
    # Limits apply per call, and a limit ends the session.
    ("slow", "session_start", {"language": "python", "timeout_s": 1}),
    ("slow_cell", "session_exec", {"session_id": "$slow", "code": "while True: pass"}),
    ("after_timeout", "session_exec", {"session_id": "$slow", "code": "1"}),
    ("big", "session_start", {"language": "python"}),
    ("big_cell", "session_exec", {"session_id": "$big", "code": "x = bytearray(1 << 30)"}),
    ("flood", "session_start", {"language": "javascript"}),
    ("flood_cell", "session_exec", {"session_id": "$flood", "code": "for (;;) console.log('x'.repeat(1000))"}),
    # Scratch files: written under /tmp, listed, fetched, confined, capped, gone with the session.
    ("f", "session_start", {"language": "python"}),
    ("f_write", "session_exec", {"session_id": "$f", "code": "import os\nos.makedirs('/tmp/out', exist_ok=True)\nopen('/tmp/out/data.csv', 'w').write('a,b\\n1,2\\n')\nopen('/tmp/blob.bin', 'wb').write(bytes(range(256)))"}),
    ("f_list", "session_files", {"session_id": "$f"}),
    ("f_text", "session_file", {"session_id": "$f", "path": "/tmp/out/data.csv"}),
    ("f_binary", "session_file", {"session_id": "$f", "path": "blob.bin"}),
    ("f_escape", "session_file", {"session_id": "$f", "path": "../../etc/passwd"}),
    ("f_missing", "session_file", {"session_id": "$f", "path": "nope.txt"}),
    ("f_guest_escape", "session_exec", {"session_id": "$f", "code": "open('/tmp/../../etc/hostname').read()"}),
    ("f_close", "session_close", {"session_id": "$f"}),
    ("sci_savefig", "session_exec", {"session_id": "$sci", "code": "plt.savefig('/tmp/plot.png')"}),
    ("sci_png", "session_file", {"session_id": "$sci", "path": "/tmp/plot.png"}),
    ("full", "session_start", {"language": "python"}),
    ("full_cell", "session_exec", {"session_id": "$full", "code": "open('/tmp/big', 'wb').write(b'x' * (20 << 20))"}),
    # Closing, and bad arguments.
    ("py_close", "session_close", {"session_id": "$py"}),
    ("closed_exec", "session_exec", {"session_id": "$py", "code": "1"}),
    ("closed_close", "session_close", {"session_id": "$py"}),
    ("unknown_session", "session_exec", {"session_id": "no-such-session", "code": "1"}),
    ("missing_session_id", "session_exec", {"code": "1"}),
    ("missing_cell_code", "session_exec", {"session_id": "$js"}),
    ("start_unknown_language", "session_start", {"language": "cobol"}),
    # One client's sessions are capped (over HTTP; the stdio user is the machine's own).
    *[(f"cap_{i}", "session_start", {"language": "lua"}) for i in range(1, 10)],
    ("still_up", "session_exec", {"session_id": "$lua_session", "code": "sq(3)"}),
]


async def exercise(read, write, out=None):
    async with ClientSession(read, write) as session:
        info = await session.initialize()
        tools = await session.list_tools()
        out = {"server": info.server_info.name, "tools": sorted(t.name for t in tools.tools), "calls": {}}
        sessions = {}
        out["sessions"] = sessions
        for name, tool, args in CALLS:
            args = {k: sessions.get(v[1:], v) if isinstance(v, str) and v.startswith("$") else v for k, v in args.items()}
            result = await session.call_tool(tool, args)
            text = "".join(c.text for c in result.content if c.type == "text")
            images = [c for c in result.content if c.type == "image"]
            pngs = [c.mime_type == "image/png" and base64.b64decode(c.data).startswith(b"\x89PNG\r\n\x1a\n") for c in images]
            structured = result.structured_content
            if tool == "session_start" and structured:
                sessions[name] = structured["session_id"]
            out["calls"][name] = {"is_error": result.is_error, "text": text, "structured": structured, "pngs": pngs}
        return out


async def intrude(read, write, out):
    # Another client names the first one's live session.
    async with ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("session_exec", {"session_id": out["sessions"]["js"], "code": "count"})
        text = "".join(c.text for c in result.content if c.type == "text")
        out["calls"]["other_client"] = {"is_error": result.is_error, "text": text}


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        env = {"SANDLOT_CACHE_DIR": os.environ.get("SANDLOT_CACHE_DIR", ""), "SANDLOT_LOG": "warn"}
        if "SANDLOT_SCRATCH_DIR" in os.environ:
            env["SANDLOT_SCRATCH_DIR"] = os.environ["SANDLOT_SCRATCH_DIR"]
        server = StdioServerParameters(command=sys.argv[2], args=["mcp"], env=env)
        async with stdio_client(server) as (read, write):
            out = await exercise(read, write)
    else:
        url, tokens = sys.argv[2], sys.argv[3:]
        for i, token in enumerate(tokens):
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as client:
                async with streamable_http_client(url, http_client=client) as (read, write):
                    if i == 0:
                        out = await exercise(read, write)
                    else:
                        await intrude(read, write, out)
    print(json.dumps(out))


asyncio.run(main())
