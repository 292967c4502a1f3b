// The datasets face, as Hanami's SDK uses it: create a CSV dataset, upload
// it in protobuf chunks over a WebSocket (one reply each), finalise it, then
// read it from a run at /data.
import { open, rest, varint } from "./common.mjs";

const rows = Array.from({ length: 1000 }, (_, i) => `${i},${2 * i}\n`).join("");
const csv = new TextEncoder().encode("x,y\n" + rows);
const CHUNK = 4096;

// FileUpload_Message { uint64 position = 1; bytes data = 2; }
const fileUploadMessage = (position, data) =>
  Uint8Array.from([0x08, ...varint(position), 0x12, ...varint(data.length), ...data]);

const created = await rest("POST", "/v1/csv/dataset", { name: "points", input_data_size: csv.length });
const ws = await open("/", { uuid: created.uuid_input_file, target: "file_upload" });
if (!(await ws.next()).success) throw new Error("the upload was refused");
for (let position = 0; position < csv.length; position += CHUNK) {
  ws.send(fileUploadMessage(position, csv.subarray(position, position + CHUNK)));
  const reply = await ws.next(); // FileUploadResponse_Message { bool success = 1; string errorMessage = 2; }
  if (reply[0] !== 0x08 || reply[1] !== 0x01) throw new Error(`chunk at ${position} refused`);
}
ws.close();
console.log("progress:", (await rest("GET", `/v1/dataset/progress?uuid=${created.uuid}`)).complete);
const dataset = await rest("PUT", "/v1/csv/dataset", { uuid: created.uuid, uuid_input_file: created.uuid_input_file });
const code = `import csv\nrows = list(csv.DictReader(open(${JSON.stringify(dataset.paths[0])})))\nprint(len(rows), 'rows, y sums to', sum(int(r['y']) for r in rows))`;
process.stdout.write((await rest("POST", "/v1/exec", { language: "python", code })).stdout);
await rest("DELETE", `/v1/dataset?uuid=${created.uuid}`);
