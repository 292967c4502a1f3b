// Direct IO, as Hanami's SDK does it: a session whose run saved a model is
// put in DIRECT mode, then asked over a WebSocket of protobuf frames
// (ClusterIO_Message), one reply per frame.
import { open, rest, varint } from "./common.mjs";

const CODE = `let factor = 2;
sandlot.saveModel("scale", { predict: (xs) => xs.map((x) => factor * x), train: (xs) => { factor = xs[0]; } });
`;

// ClusterIO_Message { string brickName = 1; bool isLast = 2; ClusterProcessType processType = 3;
// uint64 numberOfValues = 4; repeated float values = 5 [packed]; }, the whole input in one frame.
function clusterIo(brick, values, train = false) {
  const name = new TextEncoder().encode(brick);
  const packed = new Uint8Array(new Float32Array(values).buffer);
  return Uint8Array.from([0x0a, ...varint(name.length), ...name, 0x10, 1, 0x18, train ? 1 : 0,
    0x20, ...varint(values.length), 0x2a, ...varint(packed.length), ...packed]);
}

// The packed floats (field 5) of a reply.
function valuesOf(message) {
  let at = 0;
  const read = () => { let n = 0, shift = 0, byte; do { byte = message[at++]; n += (byte & 0x7f) * 2 ** shift; shift += 7; } while (byte & 0x80); return n; };
  while (at < message.length) {
    const key = read();
    if ((key & 7) === 0) { read(); continue; }
    const length = read();
    if (key >> 3 === 5) return Array.from(new Float32Array(message.slice(at, at + length).buffer));
    at += length;
  }
  return [];
}

const run = await open("/", { action: "run", javascript: { files: [{ filename: "main.js", content: CODE }] } });
const session = (await run.next()).sessionId;
while ((await run.next()).action !== "finished");
run.close();

await rest("PUT", "/v1/cluster/set_mode", { uuid: session, new_state: "DIRECT" });
const ws = await open("/", { uuid: session, target: "cluster" });
if (!(await ws.next()).success) throw new Error("not in DIRECT mode");
ws.send(clusterIo("scale", [1, 2, 3]));
console.log("prediction:", valuesOf(await ws.next()));
ws.send(clusterIo("scale", [10], true));
await ws.next(); // an empty ClusterIO_Message: trained
ws.send(clusterIo("scale", [1, 2, 3]));
console.log("after training:", valuesOf(await ws.next()));
ws.close();
