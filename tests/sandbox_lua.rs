//! What only the Lua guest has, through the library's session core with real
//! instances (the contract every language keeps is tests/contract.rs).

mod common;

use common::run;
use sandlot::Language;

const LUA: Language = Language::Lua;

/// Lua does not check a binary chunk's bytecode, and a crafted one corrupts
/// the interpreter: every way into the loader takes text chunks only
/// (guest-runtimes/lua/text_only.c), even a binary chunk written to `/tmp`.
#[tokio::test]
async fn binary_chunks_are_refused_on_every_way_in() {
    let code = r#"
local refused = "attempt to load a binary chunk"
local function check(what, ok, err)
  print(what, ok == nil or ok == false, tostring(err):find(refused, 1, true) ~= nil)
end
local dumped = string.dump(function() return 2 end)
check("load", load(dumped))
check("load b", load(dumped, "chunk", "b"))
local out = assert(io.open("/tmp/chunk.lua", "wb"))
out:write(dumped)
out:close()
check("loadfile", loadfile("/tmp/chunk.lua"))
check("dofile", pcall(dofile, "/tmp/chunk.lua"))
package.path = "/tmp/?.lua"
check("require", pcall(require, "chunk"))
local text = assert(io.open("/tmp/text.lua", "w"))
text:write("return 3")
text:close()
print("text", load("return 1")(), dofile("/tmp/text.lua"))
"#;
    let ran = run(LUA, &[("main.lua", code)]).await;
    assert_eq!(
        ran.stdout,
        "load\ttrue\ttrue\nload b\ttrue\ttrue\nloadfile\ttrue\ttrue\ndofile\ttrue\ttrue\nrequire\ttrue\ttrue\ntext\t1\t3\n",
        "{}",
        ran.stderr
    );
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.stderr);
}
