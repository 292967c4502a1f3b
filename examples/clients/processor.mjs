// The processor face: a script runs with a context, and each of its engine
// commands is a round trip to this client, which plays the game engine.
import { open } from "./common.mjs";

const SCRIPT = `const moved = sandlot.engine("move", { x: 1, y: 2 });
console.log(sandlot.context.player, "is at", JSON.stringify(moved.at));
`;

const ws = await open("/processor");
if ((await ws.next()).type !== "ready") throw new Error("no ready");
ws.send({ type: "context", language: "javascript", context: { player: "ada" }, ...(process.env.SANDLOT_TOKEN ? { token: process.env.SANDLOT_TOKEN } : {}) });
if ((await ws.next()).type !== "ready") throw new Error("no second ready");
ws.send(SCRIPT); // the code itself, as one text frame
for (;;) {
  const message = await ws.next();
  if (message.type === "command") {
    ws.send({ type: "command_result", id: message.id, ok: true, result: { at: [message.args.x, message.args.y] } });
  } else if (message.type === "stdout" || message.type === "stderr") {
    process.stdout.write(message.message);
  } else if (message.type === "end") {
    console.log("end:", message.exitCode);
    break;
  } else if (message.type === "error") {
    throw new Error(message.message);
  }
}
ws.close();
