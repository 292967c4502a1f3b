// MCP over streamable HTTP, JSON-RPC by hand (an agent framework's MCP
// client does this for you): initialise, list the tools, call run_code.
import { HEADERS, URL } from "./common.mjs";

let id = 0;
async function rpc(method, params, notification = false) {
  const response = await fetch(URL + "/mcp", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json, text/event-stream", ...HEADERS },
    body: JSON.stringify({ jsonrpc: "2.0", method, params, ...(notification ? {} : { id: ++id }) }),
  });
  if (notification) return null;
  const answer = await response.json();
  if (answer.error) throw new Error(JSON.stringify(answer.error));
  return answer.result;
}

await rpc("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "example", version: "1" } });
await rpc("notifications/initialized", {}, true);
const tools = await rpc("tools/list", {});
console.log("tools:", tools.tools.map((tool) => tool.name).sort().join(", "));
const result = await rpc("tools/call", { name: "run_code", arguments: { language: "python", code: "x = 6\nprint('working')\nx * 7" } });
const answer = result.structuredContent;
process.stdout.write(answer.stdout);
console.log("value:", answer.value, "exit:", answer.exit_code);
