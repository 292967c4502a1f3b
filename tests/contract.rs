//! One behaviour contract, run for every language (python, javascript,
//! python-sci, lua) through the library's session core with real guests:
//! output and errors, every limit, kill, isolation through each language's
//! real file and network APIs, and the host capabilities. Each language gives
//! its own spelling of the same programs (a `Dialect`); what a language
//! cannot do (JavaScript and Lua have no sockets) it shows it refuses.

mod common;

use std::time::{Duration, Instant};

use common::{kill_while_printing, program, run, run_with, short_limits};
use sandlot::{EndReason, Language, Limits};
use serde_json::json;

/// One language's spelling of the contract's programs.
struct Dialect {
    language: Language,
    /// A main file and a module it imports, printing `42`.
    import: [(&'static str, &'static str); 2],
    /// Prints `out` to stdout and `oops` to stderr.
    stderr: &'static str,
    /// Fails on its third line with the message `bad`.
    error_line_3: &'static str,
    /// How the error report names line 3 of the main file.
    line_3: &'static str,
    /// Exits with status 3.
    exit_3: &'static str,
    /// Allocates without end.
    memory_bomb: &'static str,
    /// Prints 1,000-byte lines without end.
    flood: &'static str,
    /// Recurses without end inside the language's own catch, prints
    /// `caught`, then recurses again uncaught.
    recursion: &'static str,
    /// Prints `before`, then sleeps (or waits) ten seconds.
    sleep: &'static str,
    /// Tries to read each path with the language's file API; prints
    /// `refused` (space-separated) for each it cannot.
    read_files: &'static str,
    /// Prints `secret=<value or none> greeting=<value>` from its environment,
    /// then `args=` and its arguments joined by commas.
    environment: &'static str,
    /// Tries to open a TCP connection to 127.0.0.1:22 with whatever the
    /// language has; prints `refused`.
    socket: &'static str,
    /// Saves the placeholder `saved` = {"xs": [1, 2], "ok": true}, reads it
    /// back and prints its `ok`.
    placeholders: &'static str,
    /// Saves a model `double` (each number times two) and a model `fails`
    /// that raises `no good`.
    models: &'static str,
    /// Defines `total` = 41 for an eval to see.
    define_total: &'static str,
    /// Prints `total + 1`.
    print_total_plus_one: &'static str,
    /// Prints `busy` without end.
    busy: &'static str,
}

const PYTHON: Dialect = Dialect {
    language: Language::Python,
    import: [
        ("main.py", "from helper import twice\nprint(twice(21))"),
        ("helper.py", "def twice(x):\n    return 2 * x"),
    ],
    stderr: "import sys\nprint('out')\nprint('oops', file=sys.stderr)",
    error_line_3: "x = 1\ny = 2\nraise ValueError('bad')",
    line_3: "\"main.py\", line 3",
    exit_3: "import sys\nsys.exit(3)",
    memory_bomb: "keep = []\nwhile True:\n    keep.append(bytearray(1 << 20))",
    flood: "while True:\n    print('x' * 999)",
    recursion: "def f(n):\n    return f(n + 1) + 1\ntry:\n    f(0)\nexcept RecursionError:\n    print('caught')\nf(0)",
    sleep: "import time\nprint('before', flush=True)\ntime.sleep(10)",
    read_files: "out = []\nfor p in ['/etc/passwd', '../etc/passwd', '/proc/self/environ']:\n    try:\n        open(p).read()\n        \
                 out.append('READ ' + p)\n    except OSError:\n        out.append('refused')\nprint(' '.join(out))",
    environment: "import os, sys\nprint(f\"secret={os.environ.get('SANDLOT_TEST_SECRET', 'none')} greeting={os.environ['GREETING']}\")\n\
                  print('args=' + ','.join(sys.argv[1:]))",
    socket: "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n    print('CONNECTED')\n\
             except Exception:\n    print('refused')",
    placeholders: "import sandlot\nsandlot.set_placeholder('saved', {'xs': [1, 2], 'ok': True})\n\
                   print(sandlot.get_placeholder('saved')['ok'])",
    models: "import sandlot\nsandlot.save_model('double', lambda xs: [2 * x for x in xs])\n\
             def fails(x):\n    raise ValueError('no good')\nsandlot.save_model('fails', fails)",
    define_total: "total = 41",
    print_total_plus_one: "print(total + 1)",
    busy: "while True:\n    print('busy')",
};

const PYTHON_SCI: Dialect = Dialect { language: Language::PythonSci, ..PYTHON };

const JAVASCRIPT: Dialect = Dialect {
    language: Language::JavaScript,
    import: [
        ("main.js", "const { twice } = require('./helper');\nconsole.log(twice(21));"),
        ("helper.js", "module.exports = { twice: (x) => 2 * x };"),
    ],
    stderr: "console.log('out');\nconsole.error('oops');",
    error_line_3: "let x = 1;\nlet y = 2;\nthrow new Error('bad');",
    line_3: "main.js:3",
    exit_3: "process.exit(3);",
    memory_bomb: "const keep = [];\nwhile (true) keep.push(new Array(1 << 20).fill(1.5));",
    flood: "for (;;) console.log('x'.repeat(999));",
    recursion: "function f(n) { return f(n + 1) + 1; }\ntry { f(0); } catch (e) { console.log('caught'); }\nf(0);",
    sleep: "console.log('before');\nsetTimeout(() => console.log('after'), 10000);",
    read_files: "const fs = require('fs');\nconst out = [];\n\
                 for (const p of ['/etc/passwd', '../etc/passwd', '/proc/self/environ']) {\n\
                   try { fs.readFileSync(p, 'utf8'); out.push('READ ' + p); } catch (e) { out.push('refused'); }\n}\n\
                 console.log(out.join(' '));",
    environment: "console.log(`secret=${process.env.SANDLOT_TEST_SECRET ?? 'none'} greeting=${process.env.GREETING}`);\n\
                  console.log('args=' + process.argv.slice(2).join(','));",
    socket: "let out = 'refused';\nfor (const m of ['net', 'http', 'dgram']) { try { require(m); out = 'HAS ' + m; } catch (e) {} }\n\
             if (typeof fetch !== 'undefined' || typeof WebSocket !== 'undefined') out = 'HAS fetch';\n\
             if (typeof std !== 'undefined' || typeof os !== 'undefined') out = 'HAS quickjs std/os';\nconsole.log(out);",
    placeholders: "sandlot.setPlaceholder('saved', { xs: [1, 2], ok: true });\nconsole.log(sandlot.getPlaceholder('saved').ok);",
    models: "sandlot.saveModel('double', (xs) => xs.map((x) => 2 * x));\n\
             sandlot.saveModel('fails', () => { throw new Error('no good'); });",
    define_total: "var total = 41;",
    print_total_plus_one: "console.log(total + 1)",
    busy: "for (;;) { console.log('busy'); }",
};

const LUA: Dialect = Dialect {
    language: Language::Lua,
    import: [
        ("main.lua", "local helper = require('helper')\nprint(helper.twice(21))"),
        ("helper.lua", "return { twice = function(x) return 2 * x end }"),
    ],
    stderr: "print('out')\nio.stderr:write('oops\\n')",
    error_line_3: "local x = 1\nlocal y = 2\nerror('bad')",
    line_3: "main.lua:3:",
    exit_3: "os.exit(3)",
    memory_bomb: "local keep = {}\nwhile true do keep[#keep + 1] = string.rep('x', 1 << 20) .. #keep end",
    flood: "while true do print(string.rep('x', 999)) end",
    recursion: "local function f(n) return f(n + 1) + 1 end\nif not pcall(f, 0) then print('caught') end\nf(0)",
    // Lua has no sleep: it waits on the clock.
    sleep: "print('before')\nlocal start = os.clock()\nwhile os.clock() - start < 10 do end",
    read_files: "local out = {}\nfor _, p in ipairs({'/etc/passwd', '../etc/passwd', '/proc/self/environ'}) do\n\
                   local f = io.open(p)\n  out[#out + 1] = f and ('READ ' .. p) or 'refused'\nend\nprint(table.concat(out, ' '))",
    environment: "print('secret=' .. (os.getenv('SANDLOT_TEST_SECRET') or 'none') .. ' greeting=' .. os.getenv('GREETING'))\n\
                  print('args=' .. table.concat(arg, ','))",
    // Lua's standard library has no sockets, and no C module can be loaded.
    socket: "local ok = pcall(require, 'socket')\nlocal lib = pcall(package.loadlib, '/lib/libc.so.6', 'socket')\n\
             print((ok or (lib and package.loadlib('/lib/libc.so.6', 'socket'))) and 'HAS socket' or 'refused')",
    placeholders: "sandlot.set_placeholder('saved', { xs = {1, 2}, ok = true })\nprint(sandlot.get_placeholder('saved').ok)",
    models: "sandlot.save_model('double', function(xs)\n  local out = {}\n  for i, x in ipairs(xs) do out[i] = 2 * x end\n  \
             return out\nend)\nsandlot.save_model('fails', function() error('no good') end)",
    define_total: "total = 41",
    print_total_plus_one: "print(total + 1)",
    busy: "while true do print('busy') end",
};

fn main_file(d: &Dialect) -> String {
    d.language.main_file()
}

async fn hello(d: &Dialect) {
    let ran = run(d.language, &[(&main_file(d), d.language.spec().hello)]).await;
    assert_eq!((ran.stdout.as_str(), ran.stderr.as_str()), ("hello\n", ""));
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (0, EndReason::Exit));
}

async fn files_import_each_other(d: &Dialect) {
    let ran = run(d.language, &d.import).await;
    assert_eq!(ran.stdout, "42\n", "{}", ran.stderr);
}

async fn stderr_is_separate(d: &Dialect) {
    let ran = run(d.language, &[(&main_file(d), d.stderr)]).await;
    assert_eq!((ran.stdout.as_str(), ran.stderr.as_str()), ("out\n", "oops\n"));
}

async fn an_error_names_its_line_and_exits_1(d: &Dialect) {
    let ran = run(d.language, &[(&main_file(d), d.error_line_3)]).await;
    assert!(ran.stderr.contains(d.line_3) && ran.stderr.contains("bad"), "{}", ran.stderr);
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (1, EndReason::Error));
}

async fn exit_codes_are_the_programs(d: &Dialect) {
    let ran = run(d.language, &[(&main_file(d), d.exit_3)]).await;
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (3, EndReason::Error), "{}", ran.stderr);
}

async fn the_wall_clock_stops_an_endless_loop(d: &Dialect) {
    let started = Instant::now();
    let ran = run_with(d.language, program(&[(&main_file(d), d.language.spec().endless)]), short_limits()).await;
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::Timeout, 124));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

async fn fuel_stops_an_endless_loop(d: &Dialect) {
    let limits = Limits::default().with_fuel(1_000_000_000).with_wall_clock(Duration::from_secs(60));
    let ran = run_with(d.language, program(&[(&main_file(d), d.language.spec().endless)]), limits).await;
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::Fuel, 124));
}

async fn a_memory_bomb_meets_the_memory_limit(d: &Dialect) {
    let limits = Limits::default().with_memory_bytes(64 << 20);
    let ran = run_with(d.language, program(&[(&main_file(d), d.memory_bomb)]), limits).await;
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::Memory, 137), "{}", ran.stderr);
    let again = run(d.language, &[(&main_file(d), d.language.spec().hello)]).await;
    assert_eq!(again.stdout, "hello\n", "the next session is fine");
}

async fn an_output_flood_meets_the_output_limit(d: &Dialect) {
    let limits = Limits::default().with_output_bytes(64 * 1024);
    let ran = run_with(d.language, program(&[(&main_file(d), d.flood)]), limits).await;
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::OutputLimit, 137));
    assert_eq!(ran.stdout.len(), 64 * 1024);
    assert!(ran.stderr.contains("output limit of 65536 bytes"), "{}", ran.stderr);
}

async fn deep_recursion_is_an_error_the_session_survives(d: &Dialect) {
    let mut ran = run(d.language, &[(&main_file(d), d.recursion)]).await;
    assert_eq!(ran.stdout, "caught\n", "{}", ran.stderr);
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (1, EndReason::Error), "{}", ran.stderr);
    let (out, err, _) = ran.eval(d.language.spec().hello).await;
    assert_eq!(out, "hello\n", "{err}");
}

async fn sleeping_past_the_deadline_is_stopped(d: &Dialect) {
    let started = Instant::now();
    let ran = run_with(d.language, program(&[(&main_file(d), d.sleep)]), short_limits()).await;
    assert_eq!((ran.outcome.reason, ran.stdout.as_str()), (EndReason::Timeout, "before\n"), "{}", ran.stderr);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

async fn kill_stops_a_running_session(d: &Dialect) {
    let session = kill_while_printing(d.language, &main_file(d), d.busy).await;
    assert!(!session.is_live());
}

async fn host_files_are_out_of_reach(d: &Dialect) {
    let ran = run(d.language, &[(&main_file(d), d.read_files)]).await;
    assert_eq!(ran.stdout, "refused refused refused\n", "{}", ran.stderr);
}

async fn the_host_environment_is_invisible(d: &Dialect) {
    // SAFETY: set before this test's sessions start; only this process reads it.
    unsafe { std::env::set_var("SANDLOT_TEST_SECRET", "hunter2") };
    let mut p = program(&[(&main_file(d), d.environment)]);
    p.env = vec![("GREETING".into(), "hi".into())];
    p.args = vec!["--flag".into(), "x".into()];
    let ran = run_with(d.language, p, Limits::default()).await;
    assert_eq!(ran.stdout, "secret=none greeting=hi\nargs=--flag,x\n", "{}", ran.stderr);
}

async fn sockets_are_refused(d: &Dialect) {
    let ran = run(d.language, &[(&main_file(d), d.socket)]).await;
    assert_eq!(ran.stdout, "refused\n", "{}", ran.stderr);
}

async fn placeholders_outlive_the_run(d: &Dialect) {
    let ran = run(d.language, &[(&main_file(d), d.placeholders)]).await;
    assert_eq!(ran.stdout.to_lowercase(), "true\n", "{}", ran.stderr);
    assert_eq!(ran.session.placeholders().get("saved"), Some(json!({"xs": [1, 2], "ok": true})));
}

async fn saved_models_predict_after_the_run(d: &Dialect) {
    let mut ran = run(d.language, &[(&main_file(d), d.models)]).await;
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.stderr);
    let doubled = ran.predict("double", json!([1, 2.5])).await.unwrap().unwrap();
    let numbers: Vec<f64> = doubled.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(numbers, [2.0, 5.0]);
    let error = ran.predict("fails", json!(1)).await.unwrap().unwrap_err();
    assert!(error.contains("no good"), "{error}");
    assert!(ran.predict("missing", json!(1)).await.is_err(), "an unknown model is the host's error");
    assert!(ran.predict("double", json!([3])).await.unwrap().is_ok(), "the session goes on");
}

async fn eval_sees_the_runs_globals(d: &Dialect) {
    let mut ran = run(d.language, &[(&main_file(d), d.define_total)]).await;
    let (out, err, outcome) = ran.eval(d.print_total_plus_one).await;
    assert_eq!((out.as_str(), outcome.exit_code), ("42\n", 0), "{err}");
}

macro_rules! contract {
    ($($dialect:ident: $module:ident),* $(,)?) => {$(
        mod $module {
            use super::*;
            contract!(@tests $dialect: hello, files_import_each_other, stderr_is_separate,
                an_error_names_its_line_and_exits_1, exit_codes_are_the_programs,
                the_wall_clock_stops_an_endless_loop, fuel_stops_an_endless_loop,
                a_memory_bomb_meets_the_memory_limit, an_output_flood_meets_the_output_limit,
                deep_recursion_is_an_error_the_session_survives, sleeping_past_the_deadline_is_stopped,
                kill_stops_a_running_session, host_files_are_out_of_reach, the_host_environment_is_invisible,
                sockets_are_refused, placeholders_outlive_the_run, saved_models_predict_after_the_run,
                eval_sees_the_runs_globals);
        }
    )*};
    (@tests $dialect:ident: $($test:ident),*) => {$(
        #[tokio::test]
        async fn $test() {
            super::$test(&$dialect).await;
        }
    )*};
}

contract!(PYTHON: python, JAVASCRIPT: javascript, PYTHON_SCI: python_sci, LUA: lua);
