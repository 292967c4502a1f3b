// The JavaScript side of the sandlot guest, run once when the interpreter starts.
// It builds the globals user code expects (console, sandlot, process, timers,
// require) over the few native functions main.c provides in `__native`.
(function (native) {
  "use strict";

  // ---- formatting, close to Node's util.inspect for everyday values ----
  function inspect(value, depth, seen) {
    if (typeof value === "string") return depth === 0 ? value : JSON.stringify(value);
    if (typeof value === "bigint") return value + "n";
    if (typeof value === "symbol") return value.toString();
    if (typeof value === "function") return value.name ? `[Function: ${value.name}]` : "[Function (anonymous)]";
    if (value === null || typeof value !== "object") return String(value);
    if (value instanceof Error) return value.stack ? `${value.name}: ${value.message}\n${value.stack}`.trimEnd() : String(value);
    if (seen.includes(value)) return "[Circular]";
    if (depth > 4) return Array.isArray(value) ? "[Array]" : "[Object]";
    seen = seen.concat([value]);
    const inner = (v) => inspect(v, depth + 1, seen);
    if (Array.isArray(value)) {
      if (value.length === 0) return "[]";
      return `[ ${value.map(inner).join(", ")} ]`;
    }
    if (value instanceof Map) return `Map(${value.size}) { ${[...value].map(([k, v]) => `${inner(k)} => ${inner(v)}`).join(", ")} }`;
    if (value instanceof Set) return `Set(${value.size}) { ${[...value].map(inner).join(", ")} }`;
    if (value instanceof Date) return value.toISOString();
    if (value instanceof RegExp) return String(value);
    if (value instanceof Promise) return "Promise { <pending> }";
    const keys = Object.keys(value);
    const name = value.constructor && value.constructor !== Object && value.constructor.name ? value.constructor.name + " " : "";
    if (keys.length === 0) return `${name}{}`;
    const key = (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k));
    return `${name}{ ${keys.map((k) => `${key(k)}: ${inner(value[k])}`).join(", ")} }`;
  }
  const format = (args) => args.map((a) => inspect(a, 0, [])).join(" ") + "\n";
  // A run's completion value as the REPL shows it (strings quoted); none for undefined.
  native.display = (value) =>
    value === undefined ? undefined : typeof value === "string" ? JSON.stringify(value) : inspect(value, 0, []);

  const counts = new Map();
  const timers = new Map();
  globalThis.console = {
    log: (...args) => native.write(1, format(args)),
    info: (...args) => native.write(1, format(args)),
    debug: (...args) => native.write(1, format(args)),
    error: (...args) => native.write(2, format(args)),
    warn: (...args) => native.write(2, format(args)),
    trace: (...args) => native.write(2, format(args) + (new Error().stack || "")),
    assert: (ok, ...args) => { if (!ok) native.write(2, "Assertion failed" + (args.length ? ": " + format(args) : "\n")); },
    count: (label = "default") => { counts.set(label, (counts.get(label) || 0) + 1); native.write(1, `${label}: ${counts.get(label)}\n`); },
    time: (label = "default") => { timers.set(label, native.now()); },
    timeEnd: (label = "default") => { native.write(1, `${label}: ${(native.now() - (timers.get(label) || 0)).toFixed(3)}ms\n`); timers.delete(label); },
    table: (data) => native.write(1, format([data])),
  };

  // ---- timers: run by main.c after the code and its promises settle ----
  let nextTimer = 1;
  const pending = new Map();
  function addTimer(fn, ms, args, repeat) {
    if (typeof fn !== "function") throw new TypeError("the callback must be a function");
    const id = nextTimer++;
    const delay = Math.max(0, Number(ms) || 0);
    pending.set(id, { fn, args, delay, repeat, due: native.now() + delay, seq: id });
    return id;
  }
  globalThis.setTimeout = (fn, ms, ...args) => addTimer(fn, ms, args, false);
  globalThis.setInterval = (fn, ms, ...args) => addTimer(fn, ms, args, true);
  globalThis.setImmediate = (fn, ...args) => addTimer(fn, 0, args, false);
  globalThis.clearTimeout = globalThis.clearInterval = globalThis.clearImmediate = (id) => { pending.delete(id); };
  globalThis.queueMicrotask = (fn) => { Promise.resolve().then(fn); };

  // Returns false when no timer is left; otherwise sleeps until the next one and runs it.
  native.runNextTimer = function () {
    let next = null;
    for (const t of pending.values()) if (next === null || t.due < next.due || (t.due === next.due && t.seq < next.seq)) next = t;
    if (next === null) return pumpStdin();
    const wait = next.due - native.now();
    if (wait > 0) native.sleep(wait);
    const id = [...pending].find(([, t]) => t === next)[0];
    if (next.repeat) { next.due = native.now() + Math.max(1, next.delay); next.seq = nextTimer++; } else pending.delete(id);
    next.fn(...next.args);
    return true;
  };

  // ---- process: argv and env of the program, exit ----
  globalThis.process = {
    argv: ["sandlot", "main.js"],
    env: {},
    platform: "wasi",
    exitCode: undefined,
    exit: (code) => native.exit(code === undefined ? (globalThis.process.exitCode || 0) : code),
    stdout: { write: (s) => { native.write(1, String(s)); return true; } },
    stderr: { write: (s) => { native.write(2, String(s)); return true; } },
    hrtime: { bigint: () => BigInt(Math.round(native.now() * 1e6)) },
  };
  globalThis.performance = { now: () => native.now() };

  // ---- standard input: what the client sends (EOF if it sends nothing) ----
  // Synchronous reads (fs.readFileSync(0)), and Node's event style
  // (process.stdin.on('data'|'end'), readline): once no timer is left, the
  // event loop reads a chunk (waiting for the client) and hands it to the
  // listeners, until EOF or until they are all removed.
  let stdinEnded = false;
  const stdinListeners = { data: [], end: [] };
  const readChunk = () => {
    if (stdinEnded) return null;
    const chunk = native.readStdin(65536);
    if (chunk === null) stdinEnded = true;
    return chunk;
  };
  const readAllStdin = () => {
    let all = "";
    for (let chunk; (chunk = readChunk()) !== null;) all += chunk;
    return all;
  };
  const listening = () => stdinListeners.data.length + stdinListeners.end.length > 0;
  function pumpStdin() {
    if (stdinEnded || !listening()) return false;
    const chunk = readChunk();
    const [event, args] = chunk === null ? ["end", []] : ["data", [chunk]];
    for (const fn of [...stdinListeners[event]]) fn(...args);
    return true;
  }
  process.stdin = {
    fd: 0,
    isTTY: false,
    on(event, fn) { (stdinListeners[event] || (stdinListeners[event] = [])).push(fn); return this; },
    once(event, fn) { const once = (...a) => { this.off(event, once); fn(...a); }; return this.on(event, once); },
    off(event, fn) { const l = stdinListeners[event] || []; const i = l.indexOf(fn); if (i >= 0) l.splice(i, 1); return this; },
    removeAllListeners(event) { for (const e of event ? [event] : Object.keys(stdinListeners)) stdinListeners[e] = []; return this; },
    setEncoding() { return this; },
    resume() { return this; },
    pause() { return this; },
    read() { return readChunk(); },
    async *[Symbol.asyncIterator]() { for (let chunk; (chunk = readChunk()) !== null;) yield chunk; },
  };
  process.stdin.addListener = process.stdin.on;
  process.stdin.removeListener = process.stdin.off;

  // readline: lines of process.stdin, as Node's interface gives them.
  function createInterface(options) {
    const output = options && options.output;
    const handlers = { line: [], close: [] };
    const questions = [];
    const waiting = [];
    const lines = [];
    let rest = "", closed = false, prompt = "> ";
    const emit = (event, ...args) => { for (const fn of [...handlers[event]]) fn(...args); };
    const take = (line) => {
      if (questions.length > 0) questions.shift()(line);
      else if (waiting.length > 0) waiting.shift()({ value: line, done: false });
      else if (handlers.line.length > 0) emit("line", line);
      else lines.push(line);
    };
    const onData = (chunk) => {
      rest += chunk;
      let at;
      while (!closed && (at = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, at).replace(/\r$/, "");
        rest = rest.slice(at + 1);
        take(line);
      }
    };
    const onEnd = () => { if (rest !== "") { const line = rest; rest = ""; take(line); } rl.close(); };
    process.stdin.on("data", onData).on("end", onEnd);
    const rl = {
      on(event, fn) {
        (handlers[event] || (handlers[event] = [])).push(fn);
        if (event === "line") while (lines.length > 0 && !closed) emit("line", lines.shift());
        return this;
      },
      question(query, fn) { if (output) output.write(String(query)); questions.push(fn); },
      setPrompt(p) { prompt = String(p); },
      prompt() { if (output) output.write(prompt); },
      write(data) { if (output) output.write(String(data)); },
      close() {
        if (closed) return;
        closed = true;
        process.stdin.off("data", onData).off("end", onEnd);
        for (const w of waiting.splice(0)) w({ value: undefined, done: true });
        emit("close");
      },
      [Symbol.asyncIterator]() {
        return {
          next: () => lines.length > 0 ? Promise.resolve({ value: lines.shift(), done: false })
            : closed ? Promise.resolve({ value: undefined, done: true })
            : new Promise((resolve) => waiting.push(resolve)),
          return: () => { rl.close(); return Promise.resolve({ value: undefined, done: true }); },
          [Symbol.asyncIterator]() { return this; },
        };
      },
    };
    rl.addListener = rl.on;
    rl.once = (event, fn) => { const once = (...a) => { handlers[event] = handlers[event].filter((f) => f !== once); fn(...a); }; return rl.on(event, once); };
    return rl;
  }
  const readline = { createInterface };

  // ---- sandlot: the host's capabilities ----
  const toJson = (value, what) => {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`${what} must be JSON-serialisable`);
    return text;
  };
  const models = new Map();
  globalThis.sandlot = Object.freeze({
    setPlaceholder(name, value) { native.setPlaceholder(String(name), toJson(value, "a placeholder value")); },
    getPlaceholder(name) { const t = native.getPlaceholder(String(name)); return t === undefined ? null : JSON.parse(t); },
    saveModel(name, model) {
      const ok = model && (typeof model === "function" || typeof model.predict === "function");
      if (!ok) throw new TypeError("a model must have a predict(x) method or be a function");
      native.registerModel(String(name));
      models.set(String(name), model);
    },
    stats(values) {
      if (!Array.isArray(values)) throw new TypeError("stats needs an array of numbers");
      const s = native.stats(values.map(Number));
      return { count: s.count, mean: s.mean, std: s.std, min: s.min, "25%": s.q1, "50%": s.median, "75%": s.q3, max: s.max };
    },
    engine(command, args) { return JSON.parse(native.engine(String(command), toJson(args === undefined ? null : args, "engine args"))); },
    get context() { const t = native.context(); return t === undefined ? null : JSON.parse(t); },
  });
  function model(name) {
    const found = models.get(name);
    if (found === undefined) throw new Error(`no model named ${JSON.stringify(name)}`);
    return found;
  }
  native.predict = function (name, input) {
    const m = model(name);
    const data = JSON.parse(input);
    return typeof m.predict === "function" ? m.predict(data) : m(data);
  };
  native.train = function (name, input) {
    const m = model(name);
    if (typeof m.train !== "function") throw new TypeError(`model ${JSON.stringify(name)} has no train(values) method`);
    return m.train(JSON.parse(input));
  };

  // ---- require(): CommonJS modules from the program's files ----
  const cache = new Map();
  function resolve(from, name) {
    if (!name.startsWith("./") && !name.startsWith("../") && !name.startsWith("/")) {
      throw new Error(`Cannot find module '${name}': only the program's own files can be required`);
    }
    const parts = name.startsWith("/") ? [] : from.split("/").slice(0, -1);
    for (const p of name.split("/")) {
      if (p === "" || p === ".") continue;
      if (p === "..") { if (parts.length === 0) throw new Error(`Cannot find module '${name}'`); parts.pop(); } else parts.push(p);
    }
    const base = parts.join("/");
    for (const candidate of [base, base + ".js", base + ".cjs", base + ".json", base + "/index.js"]) {
      if (native.hasFile(candidate)) return candidate;
    }
    throw new Error(`Cannot find module '${name}'`);
  }
  // ---- fs: reads of /data (the server's datasets, read-only); writes fail ----
  const text = (options) => {
    const encoding = typeof options === "string" ? options : options && options.encoding;
    if (encoding && !/^utf-?8$/i.test(encoding)) throw new Error(`encoding ${encoding} is not supported; use utf8`);
    return !!encoding;
  };
  const fs = {
    readFileSync: (path, options) => {
      // Standard input, whole (a string with or without an encoding: there is no Buffer).
      if (path === 0 || path === "/dev/stdin") return readAllStdin();
      const read = native.fsRead(String(path), text(options));
      return typeof read === "string" ? read : new Uint8Array(read);
    },
    writeFileSync: (path, data) => native.fsWrite(String(path), String(data), false),
    appendFileSync: (path, data) => native.fsWrite(String(path), String(data), true),
    readdirSync: (path) => native.fsList(String(path)),
    existsSync: (path) => { try { native.fsStat(String(path)); return true; } catch (e) { return false; } },
    statSync: (path) => {
      const s = native.fsStat(String(path));
      return { size: s.size, isFile: () => s.file, isDirectory: () => s.dir };
    },
  };
  fs.promises = {
    readFile: async (path, options) => fs.readFileSync(path, options),
    writeFile: async (path, data) => fs.writeFileSync(path, data),
    readdir: async (path) => fs.readdirSync(path),
    stat: async (path) => fs.statSync(path),
  };
  const builtins = new Map([["fs", fs], ["node:fs", fs], ["fs/promises", fs.promises], ["node:fs/promises", fs.promises],
    ["readline", readline], ["node:readline", readline]]);

  function makeRequire(from) {
    return function require(name) {
      if (builtins.has(name)) return builtins.get(name);
      const path = resolve(from, String(name));
      if (cache.has(path)) return cache.get(path).exports;
      const module = { exports: {}, id: path, filename: path, loaded: false };
      cache.set(path, module);
      if (path.endsWith(".json")) {
        module.exports = JSON.parse(native.readFile(path));
      } else {
        const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
        native.compileCommonJs(path).call(module.exports, module.exports, makeRequire(path), module, path, dir);
      }
      module.loaded = true;
      return module.exports;
    };
  }
  native.resetModules = (main) => { cache.clear(); globalThis.require = makeRequire(main); };
  globalThis.require = makeRequire("main.js");
})
