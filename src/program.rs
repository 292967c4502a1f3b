//! What a client asks a session to run: files, a main file, arguments and an
//! environment, checked before anything reaches a guest.

use crate::error::Error;

/// Most files in one program.
pub const MAX_FILES: usize = 1000;
/// Most bytes of source across a program's files.
pub const MAX_SOURCE_BYTES: usize = 16 << 20;
/// Longest file name or path.
pub const MAX_NAME_BYTES: usize = 512;

/// One user file: a relative path and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub content: String,
}

/// A program for a session to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub files: Vec<SourceFile>,
    pub main_file: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Program {
    /// A one-file program.
    pub fn single(name: impl Into<String>, content: impl Into<String>) -> Self {
        let name = name.into();
        Program {
            files: vec![SourceFile { name: name.clone(), content: content.into() }],
            main_file: name,
            ..Program::default()
        }
    }

    /// Checks the program and normalises its paths (`./a.py` → `a.py`).
    pub fn validated(mut self) -> Result<Program, Error> {
        if self.files.is_empty() {
            return Err(Error::InvalidProgram("a program needs at least one file".into()));
        }
        if self.files.len() > MAX_FILES {
            return Err(Error::InvalidProgram(format!("a program may have at most {MAX_FILES} files")));
        }
        let total: usize = self.files.iter().map(|f| f.content.len()).sum();
        if total > MAX_SOURCE_BYTES {
            return Err(Error::InvalidProgram(format!(
                "the program's files hold {total} bytes; at most {MAX_SOURCE_BYTES} are allowed"
            )));
        }
        for file in &mut self.files {
            file.name = normalise(&file.name)?;
        }
        let mut names: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::InvalidProgram(format!("file {:?} is given twice", pair[0])));
        }
        self.main_file = normalise(&self.main_file)?;
        if !self.files.iter().any(|f| f.name == self.main_file) {
            return Err(Error::InvalidProgram(format!(
                "main file {:?} is not one of the program's files ({})",
                self.main_file,
                names.join(", ")
            )));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(Error::InvalidProgram(format!("environment variable {key:?} is not a valid name")));
            }
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidProgram("arguments may not contain NUL bytes".into()));
        }
        Ok(self)
    }
}

/// A file name as the guest will see it: relative, `/`-separated, without `.` or `..`.
fn normalise(name: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::InvalidProgram(format!("file name {name:?} {why}"));
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(bad(&format!("must be 1 to {MAX_NAME_BYTES} bytes long")));
    }
    if name.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(bad("may not contain `..`")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("names no file"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two(main: &str) -> Program {
        Program {
            files: vec![
                SourceFile { name: "./main.py".into(), content: "import lib".into() },
                SourceFile { name: "pkg/lib.py".into(), content: "".into() },
            ],
            main_file: main.into(),
            ..Program::default()
        }
    }

    #[test]
    fn normalises_paths() {
        let p = two("main.py").validated().unwrap();
        assert_eq!(p.files[0].name, "main.py");
        assert_eq!(p.main_file, "main.py");
        assert_eq!(two("/main.py").validated().unwrap().main_file, "main.py");
    }

    #[test]
    fn refuses_escapes_missing_main_and_duplicates() {
        assert!(two("../main.py").validated().unwrap_err().to_string().contains(".."));
        assert!(two("other.py").validated().unwrap_err().to_string().contains("not one of"));
        let mut p = two("main.py");
        p.files[1].name = "main.py".into();
        assert!(p.validated().unwrap_err().to_string().contains("twice"));
        assert!(Program::default().validated().is_err());
        let mut p = two("main.py");
        p.env.push(("A=B".into(), "c".into()));
        assert!(p.validated().is_err());
    }
}
