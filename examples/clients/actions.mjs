// The runtime actions face: a run that trains a model and saves a value,
// then the model's prediction, the value and the run's status.
import { open } from "./common.mjs";

const CODE = `const double = { predict: (xs) => xs.map((x) => 2 * x) };
sandlot.saveModel("double", double);
sandlot.setPlaceholder("greeting", "hello");
console.log("trained");
`;

const ws = await open("/", { action: "run", javascript: { files: [{ filename: "main.js", content: CODE }], mainfile: "main.js" } });
const session = (await ws.next()).sessionId;
for (;;) { // output is pushed as it is written, then the end
  const pushed = await ws.next();
  if (pushed.action === "output") process.stdout.write(pushed.data);
  else if (pushed.action === "finished") { console.log("finished:", pushed.status, pushed.exitCode); break; }
}
const ask = async (request) => { ws.send(request); return ws.next(); };
console.log("prediction:", (await ask({ action: "run_model", model: { sessionId: session, name: "double", data: [1, 2, 3] } })).prediction);
console.log("greeting:", (await ask({ action: "get_placeholder", placeholder: { sessionId: session, name: "greeting" } })).value);
console.log("status:", (await ask({ action: "status", sessionId: session })).status);
ws.close();
