'use strict';

// log4js's cluster support: in a worker, log4js sends each logging event to the master
// (`process.send({ topic: 'log4js:message', data })`, data being the event serialised) and
// writes nothing itself; the master, a Node cluster primary running log4js, writes it. rcluster's
// primary runs no log4js, so it writes each such event to its stdout, one line as log4js's basic
// layout makes it: `[2024-05-01T12:00:00.123] [INFO] category - message`.

const util = require('node:util');

const TOPIC = 'log4js:message';

/** Whether a worker's message is a log4js logging event. */
function isLog4jsMessage(message) {
  return message !== null && typeof message === 'object' && message.topic === TOPIC && message.data !== undefined;
}

/** log4js's special values, which its serialiser writes as these strings. */
const SPECIAL = {
  __LOG4JS_undefined__: undefined,
  __LOG4JS_NaN__: NaN,
  __LOG4JS_Infinity__: Infinity,
  '__LOG4JS_-Infinity__': -Infinity,
};

/**
 * Reads flatted's format (log4js 6 and later serialise with it): a JSON array whose first entry
 * is the value; inside objects, a string is the index of the entry it stands for.
 */
function unflatten(input) {
  const table = input.map((entry) => (entry instanceof String ? String(entry) : entry));
  const seen = new Set();
  const revive = (object) => {
    seen.add(object);
    for (const key of Object.keys(object)) {
      let value = object[key];
      if (value instanceof String) value = object[key] = table[Number(value)];
      if (value !== null && typeof value === 'object' && !seen.has(value)) revive(value);
    }
    return object;
  };
  const root = table[0];
  return root !== null && typeof root === 'object' ? revive(root) : root;
}

/** The logging event in a log4js message: flatted (log4js 6+), JSON (before), or an object. */
function readEvent(data) {
  if (typeof data !== 'string') return data;
  const parsed = JSON.parse(data, (key, value) => (typeof value === 'string' ? new String(value) : value));
  const plain = (value) => JSON.parse(JSON.stringify(value));
  return Array.isArray(parsed) ? unflatten(parsed) : plain(parsed);
}

const pad = (n, width = 2) => String(n).padStart(width, '0');

/** log4js's ISO8601 format, in local time: yyyy-MM-ddThh:mm:ss.SSS. */
function timestamp(date) {
  if (Number.isNaN(date.getTime())) return '';
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** One logging event as log4js's basic layout writes it (an error by its stack). */
function formatEvent(event) {
  const data = Array.isArray(event.data) ? event.data : [event.data];
  const values = data.map((value) => {
    if (typeof value === 'string' && Object.hasOwn(SPECIAL, value)) return SPECIAL[value];
    if (value !== null && typeof value === 'object' && typeof value.stack === 'string') return value.stack;
    return value;
  });
  const level = (event.level && (event.level.levelStr || event.level)) || 'INFO';
  const when = timestamp(new Date(event.startTime));
  const message = util.format(...values).replace(/\n/g, '\n  ');
  return `[${when}] [${level}] ${event.categoryName || 'default'} - ${message}`;
}

/**
 * Writes a worker's log4js message to stdout; one that cannot be read is written as it came, so
 * nothing is lost.
 */
function writeLog4jsMessage(message, out = process.stdout) {
  let line;
  try {
    line = formatEvent(readEvent(message.data));
  } catch {
    line = typeof message.data === 'string' ? message.data : util.inspect(message.data);
  }
  out.write(`${line}\n`);
}

module.exports = { isLog4jsMessage, writeLog4jsMessage, formatEvent, readEvent };
