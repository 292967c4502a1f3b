-- The Lua side of the sandlot guest, run once when the interpreter starts.
-- It builds what user code sees (the `sandlot` module, `require` of the
-- program's own files, `arg`, `os.getenv`, `os.exit`) over the natives main.c
-- gives in `__sandlot_native`, and the entry points main.c calls, in `__sandlot`.
local native = __sandlot_native
__sandlot_native = nil

-- ---- JSON, for everything that crosses to the host ----
local json = {}
-- Decoded JSON null, where a value must stand (in arrays and objects).
json.null = setmetatable({}, { __tostring = function() return "null" end, __name = "sandlot.null" })

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode(value, seen, out)
  local kind = type(value)
  if value == nil or value == json.null then
    out[#out + 1] = "null"
  elseif kind == "boolean" then
    out[#out + 1] = tostring(value)
  elseif kind == "number" then
    if value ~= value or value == math.huge or value == -math.huge then
      error("cannot convert " .. tostring(value) .. " to JSON", 0)
    end
    out[#out + 1] = math.type(value) == "integer" and string.format("%d", value) or string.format("%.17g", value)
  elseif kind == "string" then
    out[#out + 1] = '"' .. value:gsub('[%c"\\]', function(c)
      return escapes[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif kind == "table" then
    if seen[value] then error("cannot convert a table that contains itself to JSON", 0) end
    seen[value] = true
    local n = #value
    local count = 0
    for _ in pairs(value) do count = count + 1 end
    if count == n then -- a sequence (or empty): an array
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(value[i], seen, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(value) do
        if type(k) ~= "string" and type(k) ~= "number" then
          error("cannot convert a table with " .. type(k) .. " keys to JSON", 0)
        end
        keys[#keys + 1] = tostring(k)
      end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(k, seen, out)
        out[#out + 1] = ":"
        local v = value[k]
        if v == nil then v = value[tonumber(k)] end
        encode(v, seen, out)
      end
      out[#out + 1] = "}"
    end
    seen[value] = nil
  else
    error("cannot convert a " .. kind .. " to JSON", 0)
  end
end

function json.encode(value)
  local out = {}
  encode(value, {}, out)
  return table.concat(out)
end

local function decode_error(text, at, what)
  error(string.format("invalid JSON at byte %d: %s", at, what), 0)
end

local decode_value

local function skip(text, at)
  return text:find("[^ \t\r\n]", at) or #text + 1
end

local function decode_string(text, at)
  local parts, i = {}, at + 1
  while true do
    local j = text:find('["\\]', i)
    if not j then decode_error(text, at, "an unterminated string") end
    parts[#parts + 1] = text:sub(i, j - 1)
    if text:sub(j, j) == '"' then return table.concat(parts), j + 1 end
    local c = text:sub(j + 1, j + 1)
    local simple = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
    if simple[c] then
      parts[#parts + 1] = simple[c]
      i = j + 2
    elseif c == "u" then
      local code = tonumber(text:sub(j + 2, j + 5), 16)
      if not code then decode_error(text, j, "a bad \\u escape") end
      i = j + 6
      if code >= 0xD800 and code <= 0xDBFF and text:sub(i, i + 1) == "\\u" then
        local low = tonumber(text:sub(i + 2, i + 5), 16)
        if low and low >= 0xDC00 and low <= 0xDFFF then
          code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
          i = i + 6
        end
      end
      parts[#parts + 1] = utf8.char(code)
    else
      decode_error(text, j, "a bad escape")
    end
  end
end

function decode_value(text, at, depth)
  if depth > 200 then decode_error(text, at, "nesting deeper than 200") end
  at = skip(text, at)
  local c = text:sub(at, at)
  if c == "{" then
    local object = {}
    at = skip(text, at + 1)
    if text:sub(at, at) == "}" then return object, at + 1 end
    while true do
      if text:sub(at, at) ~= '"' then decode_error(text, at, "a key must be a string") end
      local key
      key, at = decode_string(text, at)
      at = skip(text, at)
      if text:sub(at, at) ~= ":" then decode_error(text, at, "':' expected") end
      object[key], at = decode_value(text, at + 1, depth + 1)
      at = skip(text, at)
      local sep = text:sub(at, at)
      if sep == "}" then return object, at + 1 end
      if sep ~= "," then decode_error(text, at, "',' or '}' expected") end
      at = skip(text, at + 1)
    end
  elseif c == "[" then
    local array = {}
    at = skip(text, at + 1)
    if text:sub(at, at) == "]" then return array, at + 1 end
    while true do
      array[#array + 1], at = decode_value(text, at, depth + 1)
      at = skip(text, at)
      local sep = text:sub(at, at)
      if sep == "]" then return array, at + 1 end
      if sep ~= "," then decode_error(text, at, "',' or ']' expected") end
      at = at + 1
    end
  elseif c == '"' then
    return decode_string(text, at)
  elseif text:find("^true", at) then
    return true, at + 4
  elseif text:find("^false", at) then
    return false, at + 5
  elseif text:find("^null", at) then
    return json.null, at + 4
  else
    local number = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", at)
    local value = number and math.tointeger(tonumber(number)) or tonumber(number or "")
    if not value then decode_error(text, at, "a value expected") end
    return value, at + #number
  end
end

function json.decode(text)
  local value, at = decode_value(text, 1, 0)
  if skip(text, at) <= #text then decode_error(text, at, "text after the value") end
  return value
end

-- ---- the sandlot module ----
local models = {}
local sandlot = { json = json, null = json.null }

function sandlot.set_placeholder(name, value)
  native.set_placeholder(tostring(name), json.encode(value))
end

function sandlot.get_placeholder(name)
  local text = native.get_placeholder(tostring(name))
  if text == nil then return nil end
  return json.decode(text)
end

function sandlot.save_model(name, model)
  local kind = type(model)
  if kind ~= "function" and not (kind == "table" and type(model.predict) == "function") then
    error("a model is a function or a table with a predict method", 2)
  end
  native.register_model(tostring(name))
  models[tostring(name)] = model
end

function sandlot.stats(values)
  return native.describe(values)
end

local EngineError = { __name = "EngineError" }
EngineError.__index = EngineError
EngineError.__tostring = function(e) return "EngineError: " .. e.message end
sandlot.EngineError = EngineError

function sandlot.engine(command, args)
  local ok, answer = native.engine(tostring(command), json.encode(args == nil and json.null or args))
  if not ok then error(setmetatable({ message = answer }, EngineError), 2) end
  return json.decode(answer)
end

setmetatable(sandlot, {
  __index = function(_, key)
    if key == "context" then
      local text = native.context()
      return text and json.decode(text) or nil
    end
  end,
})
_G.sandlot = sandlot
package.loaded.sandlot = sandlot

-- ---- the program: its files, require, arg, the environment, exit ----
local files, environment = {}, {}

-- `require("a.b")` finds the program's own a/b.lua or a/b/init.lua.
table.insert(package.searchers, 2, function(name)
  local path = name:gsub("%.", "/")
  for _, candidate in ipairs({ path .. ".lua", path .. "/init.lua" }) do
    local source = files[candidate]
    if source then
      local chunk, err = load(source, "@" .. candidate)
      if not chunk then error(err, 0) end
      return chunk, candidate
    end
  end
  return "\n\tno file '" .. path .. ".lua' in the program"
end)

os.getenv = function(name) return environment[name] end
os.clock = native.clock

local Exit = {}
os.exit = function(code)
  if code == true or code == nil then code = 0 elseif code == false then code = 1 end
  native.flush()
  error(setmetatable({ code = math.tointeger(code) or 1 }, Exit), 0)
end

-- The error and its traceback as the `lua` command prints them, without the
-- prelude's own frames.
local function report(err)
  if getmetatable(err) == Exit then return err end
  local message = tostring(err)
  if type(err) == "table" and getmetatable(err) == nil then message = "(error object is a table value)" end
  local lines = {}
  for line in debug.traceback(message, 2):gmatch("[^\n]+") do
    if not line:find("prelude", 1, true) and not line:find("[C]: in function 'xpcall'", 1, true)
        and not line:find("[C]: in ?", 1, true) then
      lines[#lines + 1] = line
    end
  end
  return "lua: " .. table.concat(lines, "\n") .. "\n"
end

local function status_of(ok, result)
  native.flush()
  if ok then return 0 end
  if getmetatable(result) == Exit then return result.code end
  io.stderr:write(result)
  io.stderr:flush()
  return 1
end

-- What a chunk returned, as the `lua` prompt shows it: each value's
-- tostring, tab-separated; nil when it returned nothing or only nil.
local function display(results)
  if results.n < 2 or (results.n == 2 and results[2] == nil) then return nil end
  local parts = {}
  for i = 2, results.n do parts[#parts + 1] = tostring(results[i]) end
  return table.concat(parts, "\t")
end

-- Runs a chunk; its status, and its value. As at the `lua` prompt, code that
-- is an expression is evaluated for its value; other code may `return` one.
local function run_chunk(source, name)
  local chunk = load("return " .. source, name)
  local err
  if not chunk then chunk, err = load(source, name) end
  if not chunk then return status_of(false, "lua: " .. err .. "\n") end
  local results = table.pack(xpcall(chunk, report))
  local status = status_of(results[1], results[2])
  if status ~= 0 or not results[1] then return status end
  local ok, value = pcall(display, results)
  if not ok then return status_of(false, "lua: " .. tostring(value) .. "\n") end
  return status, value
end

__sandlot = {}

function __sandlot.run(program_files, main, args, env)
  files, environment = program_files, env
  for name in pairs(package.loaded) do
    if files[name:gsub("%.", "/") .. ".lua"] then package.loaded[name] = nil end
  end
  arg = { [0] = main }
  for i, a in ipairs(args) do arg[i] = a end
  local source = files[main]
  if not source then return status_of(false, "sandlot: the main file is not among the program's files\n") end
  return run_chunk(source, "@" .. main)
end

function __sandlot.eval(code)
  return run_chunk(code, "=eval")
end

local function model(name)
  local found = models[name]
  if found == nil then
    local names = {}
    for k in pairs(models) do names[#names + 1] = k end
    table.sort(names)
    error(string.format("no model named %q; saved models: %s", name, table.concat(names, ", ")), 0)
  end
  return found
end

-- A model's error, as its message (not a traceback).
local function message(err)
  if getmetatable(err) == Exit then return "the model called os.exit" end
  return tostring(err)
end

function __sandlot.predict(name, input)
  local m = model(name)
  local ok, result = pcall(function()
    local data = json.decode(input)
    if type(m) == "function" then return m(data) end
    return m:predict(data)
  end)
  native.flush()
  if not ok then error(message(result), 0) end
  return json.encode(result)
end

function __sandlot.train(name, input)
  local m = model(name)
  local fit = type(m) == "table" and (m.train or m.partial_fit)
  if type(fit) ~= "function" then
    error(string.format("model %q has no train(values) method", name), 0)
  end
  local ok, result = pcall(fit, m, json.decode(input))
  native.flush()
  if not ok then error(message(result), 0) end
end
