//! Names (feature and attribute names) read from Python objects, interned to dense ids.
//!
//! The same name usually arrives as the same `str` object again and again (the item dicts of
//! a catalog share their key objects), so a lookup by object address comes first and the
//! text is hashed only for an object not seen before. Each remembered object is kept alive by
//! the table, so its address cannot be reused by another string while the table exists.

use super::validation_error;
use pyo3::prelude::*;
use pyo3::types::PyString;
use rustc_hash::FxHashMap;

#[derive(Default)]
pub struct NameIds<'py> {
    by_object: FxHashMap<usize, (u32, Bound<'py, PyAny>)>,
    by_text: FxHashMap<String, u32>,
    pub names: Vec<String>,
}

impl<'py> NameIds<'py> {
    /// The id of `name`, a Python `str`, adding it when new; `what` describes the name for the
    /// error when it is not a `str`.
    pub fn id(&mut self, name: &Bound<'py, PyAny>, what: impl Fn() -> String) -> PyResult<u32> {
        let address = name.as_ptr() as usize;
        if let Some((id, _)) = self.by_object.get(&address) {
            return Ok(*id);
        }
        let text = name
            .cast::<PyString>()
            .map_err(|_| validation_error(format!("{} must be str", what())))?
            .to_str()?;
        let id = match self.by_text.get(text) {
            Some(&id) => id,
            None => {
                let id = self.names.len() as u32;
                self.names.push(text.to_owned());
                self.by_text.insert(text.to_owned(), id);
                id
            }
        };
        self.by_object.insert(address, (id, name.clone()));
        Ok(id)
    }
}
