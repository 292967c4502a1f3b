"""Drives sandlot's MCP face with the official MCP client (PyPI `mcp`), as
an agent's host does: `stdio SANDLOT_BINARY` starts `sandlot mcp`;
`http URL TOKEN` connects to `/mcp` of a running server. Prints one JSON
object: the server's name, its tools, and each call's result."""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

CALLS = [
    ("python", "run_code", {"language": "python", "code": "import sys\nprint(6 * 7)\nprint('oops', file=sys.stderr)"}),
    ("javascript", "run_code", {"language": "javascript", "code": "console.log([1, 2, 3].map((x) => x * 2).join(','))"}),
    ("lua", "run_code", {"language": "lua", "code": "print(string.rep('ab', 3))"}),
    ("stdin", "run_code", {"language": "python", "code": "print(input()[::-1])", "stdin": "olleh\n"}),
    ("exit_code", "run_code", {"language": "python", "code": "raise SystemExit(3)"}),
    ("timeout", "run_code", {"language": "javascript", "code": "for (;;) {}", "timeout_s": 1}),
    ("memory", "run_code", {"language": "python", "code": "x = bytearray(1 << 30)"}),
    ("unknown_language", "run_code", {"language": "cobol", "code": "DISPLAY 'HI'."}),
    ("missing_code", "run_code", {"language": "python"}),
    ("bad_timeout", "run_code", {"language": "python", "code": "pass", "timeout_s": -1}),
    ("languages", "list_languages", {}),
    ("after_errors", "run_code", {"language": "python", "code": "print('still up')"}),
]


async def exercise(read, write):
    async with ClientSession(read, write) as session:
        info = await session.initialize()
        tools = await session.list_tools()
        out = {"server": info.server_info.name, "tools": sorted(t.name for t in tools.tools), "calls": {}}
        for name, tool, args in CALLS:
            result = await session.call_tool(tool, args)
            text = "".join(c.text for c in result.content if c.type == "text")
            out["calls"][name] = {"is_error": result.is_error, "text": text, "structured": result.structured_content}
        print(json.dumps(out))


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        env = {"SANDLOT_CACHE_DIR": os.environ.get("SANDLOT_CACHE_DIR", ""), "SANDLOT_LOG": "warn"}
        server = StdioServerParameters(command=sys.argv[2], args=["mcp"], env=env)
        async with stdio_client(server) as (read, write):
            await exercise(read, write)
    else:
        url, token = sys.argv[2], sys.argv[3]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as client:
            async with streamable_http_client(url, http_client=client) as (read, write):
                await exercise(read, write)


asyncio.run(main())
