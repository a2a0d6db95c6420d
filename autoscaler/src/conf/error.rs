//! What can go wrong reading the configuration: [`ConfError`] (the service refuses to start)
//! and [`ConfWarning`] (logged, then ignored). Every variant names the file it came from,
//! and a bad value also its section, option, value and what was expected.

use std::{fmt, io, path::PathBuf};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// A `--config-file` (or a file of the `--config-dir`) could not be read. The I/O
    /// reason is part of the message, so it is not also exposed as `source()` (it would
    /// be printed twice by error-chain printers).
    #[error("{}: cannot read the config file: {error}", path.display())]
    ReadFile { path: PathBuf, error: io::Error },

    /// The `--config-dir` could not be listed.
    #[error("{}: cannot read the config directory: {error}", path.display())]
    ReadDir { path: PathBuf, error: io::Error },

    /// A line oslo.config's INI syntax does not allow (a line without `=`, an option
    /// outside any section, ...), with its file and line.
    #[error(transparent)]
    Ini(#[from] autoscaler_core::ini::IniError),

    /// A value its option's type does not accept. For `transport_url`, `value` is
    /// redacted (no passwords).
    #[error("{}: [{section}] {option} = {value:?}: {reason}", file.display())]
    BadValue {
        file: PathBuf,
        section: String,
        option: String,
        value: String,
        /// What was expected, e.g. `expected an integer from 1 to 10000`.
        reason: String,
    },
}

/// Something in a config file that is ignored. Other OpenStack libraries may share the
/// file, so unknown sections and options do not stop the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfWarning {
    /// A section no autoscaler option lives in.
    UnknownSection { file: PathBuf, section: String },
    /// An option not declared in a section the autoscaler knows; usually a typo.
    UnknownOption {
        file: PathBuf,
        section: String,
        option: String,
    },
}

impl fmt::Display for ConfWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfWarning::UnknownSection { file, section } => {
                write!(f, "{}: unknown section [{section}] ignored", file.display())
            }
            ConfWarning::UnknownOption {
                file,
                section,
                option,
            } => write!(
                f,
                "{}: [{section}] unknown option {option:?} ignored",
                file.display()
            ),
        }
    }
}
