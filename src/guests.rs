//! The guest components built into this binary (see `guest-runtimes/`), and
//! where python-sci's files are.
//!
//! `build.rs` embeds every component it finds in `guest-runtimes/out/` and
//! records its SHA-256 digest, which keys the compile cache. A language whose
//! guest was not built is refused at run time with how to build it.

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::language::{GuestKind, Language};

/// One embedded guest component.
pub(crate) struct Embedded {
    file: &'static str,
    bytes: &'static [u8],
    digest: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

fn missing(language: Language) -> Error {
    Error::GuestLoad {
        language,
        message: "its guest was not built into this binary: run guest-runtimes/build.sh (or ./dev.sh build), \
                  then build sandlot again"
            .into(),
    }
}

fn embedded(language: Language) -> Result<&'static Embedded, Error> {
    match language.spec().guest {
        GuestKind::Component { file } => EMBEDDED.iter().find(|e| e.file == file).ok_or_else(|| missing(language)),
        GuestKind::SciCore => Err(Error::GuestLoad { language, message: "its guest is not a component".into() }),
    }
}

/// The component bytes of a language's guest.
pub(crate) fn bytes(language: Language) -> Result<&'static [u8], Error> {
    embedded(language).map(|e| e.bytes)
}

/// Where python-sci's files are (too large to build into the binary):
/// `$SANDLOT_SCI_DIR`, else where `guest-runtimes/build.sh` put them.
pub(crate) fn sci_dir() -> std::path::PathBuf {
    std::env::var_os("SANDLOT_SCI_DIR")
        .map(Into::into)
        .unwrap_or_else(|| concat!(env!("SANDLOT_GUEST_DIR"), "/python-sci").into())
}

/// The SHA-256 of a language's guest, in hex. python-sci's is that of its
/// files' digests (`guest.sha256`, written by `guest-runtimes/build.sh`), read
/// where its files are now.
pub(crate) fn digest(language: Language) -> Result<String, Error> {
    match language.spec().guest {
        GuestKind::Component { .. } => embedded(language).map(|e| e.digest.to_string()),
        GuestKind::SciCore => {
            let sums = sci_dir().join("guest.sha256");
            let bytes = std::fs::read(&sums).map_err(|e| Error::GuestLoad {
                language,
                message: format!(
                    "cannot read {} ({e}): build the guests (./dev.sh build) or set SANDLOT_SCI_DIR",
                    sums.display()
                ),
            })?;
            Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}
