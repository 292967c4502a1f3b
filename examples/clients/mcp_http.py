"""MCP over streamable HTTP with the official Python client: the tools, and
one run of `run_code`."""

import asyncio

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from common import HEADERS, URL


async def main():
    async with httpx2.AsyncClient(headers=HEADERS, timeout=60) as http:
        async with streamable_http_client(URL + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                print("tools:", ", ".join(sorted(tool.name for tool in tools.tools)))
                result = await session.call_tool("run_code", {"language": "python", "code": "x = 6\nprint('working')\nx * 7"})
                answer = result.structured_content
                print(answer["stdout"], end="")
                print("value:", answer["value"], "exit:", answer["exit_code"])


asyncio.run(main())
