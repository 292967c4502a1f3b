// What every JavaScript example shares: where the server is, its token, a
// socket that hands out its messages in order, and REST calls.
// Node 20: run with `node --experimental-websocket FILE` (Node 22 needs no flag).

export const URL = (process.env.SANDLOT_URL || "http://127.0.0.1:8765").replace(/\/$/, "");
const TOKEN = process.env.SANDLOT_TOKEN;
export const HEADERS = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};

export async function rest(method, path, body) {
  const response = await fetch(URL + path, {
    method,
    headers: { "Content-Type": "application/json", ...HEADERS },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}

// A WebSocket whose messages are read with `await socket.next()`: text as
// parsed JSON (or the text itself), binary as a Uint8Array. Browsers' and
// Node's WebSocket take no headers: the token goes in the first message.
export async function open(path, first) {
  const ws = new WebSocket(URL.replace(/^http/, "ws") + path);
  ws.binaryType = "arraybuffer";
  const queue = [], waiting = [];
  ws.onmessage = (event) => {
    const data = typeof event.data === "string" ? parse(event.data) : new Uint8Array(event.data);
    waiting.length ? waiting.shift()(data) : queue.push(data);
  };
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("cannot connect")); });
  if (first !== undefined) ws.send(JSON.stringify(TOKEN ? { ...first, token: TOKEN } : first));
  return {
    send: (message) => ws.send(typeof message === "string" || message instanceof Uint8Array ? message : JSON.stringify(message)),
    next: () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve) => waiting.push(resolve))),
    close: () => ws.close(),
  };
}

function parse(text) {
  try { return JSON.parse(text); } catch { return text; }
}

// Protobuf by hand: the few fields these messages have.
export function varint(n) {
  const out = [];
  do { out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0)); n = Math.floor(n / 128); } while (n > 0);
  return out;
}
