'use strict';

// `rcluster <command>`: dispatch, help and exit codes (0 done, 1 failed, 2 bad usage, 3 no
// cluster of that name is running).

const { parseCommandLine } = require('./command-line');
const { UsageError, CliError, describeError } = require('./failures');
const { usage } = require('./usage');
const { start } = require('./start');
const verbs = require('./verbs');

function usageFailure(error) {
  process.stderr.write(`rcluster: ${error.message}\n\n${usage(error.topic)}\n`);
  process.exitCode = 2;
}

/** A reader that went away (`rcluster logs app | head`) ends the command quietly. */
function quietOnClosedPipe() {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error) => {
      if (error.code !== 'EPIPE') throw error;
      process.exit(process.exitCode || 0);
    });
  }
}

async function runCommand(command) {
  if (command.command === 'help') {
    process.stdout.write(`${usage(command.topic)}\n`);
    return;
  }
  if (command.command === 'version') {
    process.stdout.write(`${require('../../package.json').version}\n`);
    return;
  }
  if (command.command === 'start') {
    await start(command);
    return;
  }
  process.exitCode = await verbs[command.command](command);
}

function main(argv) {
  quietOnClosedPipe();
  let command;
  try {
    command = parseCommandLine(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    usageFailure(error);
    return Promise.resolve();
  }
  return runCommand(command).catch((error) => {
    if (error instanceof UsageError) usageFailure(error);
    else if (error instanceof CliError) {
      process.stderr.write(`rcluster: ${describeError(error)}\n`);
      process.exitCode = error.exitCode;
    } else throw error;
  });
}

module.exports = { main };
