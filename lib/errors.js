'use strict';

// Every error rcluster raises is an `Error` with a `code`, so callers can branch on it.

function rclusterError(code, message, props) {
  const error = new Error(message);
  error.code = code;
  if (props) Object.assign(error, props);
  return error;
}

function typeError(code, message) {
  const error = new TypeError(message);
  error.code = code;
  return error;
}

/** Errors thrown by the native addon carry their code already; this keeps their class honest. */
function fromNative(error) {
  if (error && error.code === 'ERR_UNKNOWN_SIGNAL' && !(error instanceof TypeError)) {
    return typeError(error.code, error.message);
  }
  return error;
}

module.exports = { rclusterError, typeError, fromNative };
