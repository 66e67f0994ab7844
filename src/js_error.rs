//! How an error reaches JavaScript: an `RcError` becomes a thrown `Error` whose `code` is the
//! error's stable code. Used by both native classes (`binding`'s primary, `child`'s channel);
//! imports only `errors`.

use napi::Status;

use crate::errors::RcError;

/// The `code` of a JavaScript error thrown from native code.
pub struct Code(pub(crate) String);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Status> for Code {
    fn from(status: Status) -> Self {
        Code(status.as_ref().to_owned())
    }
}

pub(crate) fn js_error(e: RcError) -> napi::Error<Code> {
    napi::Error::new(Code(e.code.to_owned()), e.message)
}
