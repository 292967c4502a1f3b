// ranna's face: one run over the WebSocket (ops and events), one over REST.
import { open, rest } from "./common.mjs";

// op 1 EXEC; events: 2 SPAWN, 3 LOG (output as written), 4 STOP, 1 ERROR.
// The token (if any) rides on a first PING.
const ws = await open("/v1/ws", { op: 0 });
ws.send({ op: 1, nonce: 1, args: { language: "python", code: "print(6 * 7)" } });
for (;;) {
  const event = await ws.next();
  if (event.code === 3) process.stdout.write(event.data.stdout ?? "");
  else if (event.code === 4) { console.log("websocket run:", event.data.reason, event.data.exitcode); break; }
  else if (event.code === 1) throw new Error(event.data);
}
ws.close();

const result = await rest("POST", "/v1/exec", { language: "javascript", code: "console.log([1, 2, 3].map((x) => x * 2).join(' '))" });
process.stdout.write(result.stdout);
console.log("rest run:", result.reason, result.exitcode);
