'use strict';

// The two ways a CLI command fails: bad usage (exit 2, with the usage) and a failure with its
// own exit code (1 failed, 3 no such cluster).

class UsageError extends Error {
  /** `topic`: whose usage to print ('start', a verb, or null for the overview). */
  constructor(message, topic = null) {
    super(message);
    this.topic = topic;
  }
}

class CliError extends Error {
  constructor(message, exitCode = 1, code = undefined) {
    super(message);
    this.exitCode = exitCode;
    if (code !== undefined) this.code = code;
  }
}

/** An error's message with its code, as the CLI prints it. */
function describeError(error) {
  return error.code ? `${error.message} (${error.code})` : error.message;
}

module.exports = { UsageError, CliError, describeError };
