'use strict';

// What one map or mapSettled call has heard (lib/messenger/messenger.js): the primary first lists
// whom to wait for, `[[id, pid], ...]`, or across hosts (option `redis`) `{ host, workers, hosts }`,
// this host's workers and the other hosts, each of which then lists its own (a frame naming it)
// or fails as a whole (FLAG_ERROR). Across hosts, entries gain `host` and are ordered by host then
// id; a host that failed before it listed its workers is one entry
// `{ host, id: 0, pid: 0, status: 'rejected' }`, so the array is never silently shorter.
//
// A class with a fixed shape, and answers counted as they come: a process with many maps in
// flight keeps one of these per map, and a map ends on its last answer.

const { rclusterError } = require('../errors');

class MapAnswers {
  constructor(action) {
    this.action = action;
    /** Whom to wait for, `{ host, id, pid }`, once the primary has said; null before. */
    this.expected = null;
    /** This host's id, when the map spans hosts. */
    this.me = undefined;
    /** Answers by worker (`keyOf`): `{ status, value }` or `{ status, reason }`. */
    this.answers = new Map();
    /** Keys of the expected workers. */
    this.listed = new Set();
    /** Expected workers not answered yet. */
    this.unanswered = 0;
    /** Hosts whose list of workers has not come yet. */
    this.waitingFor = null;
    /** Hosts that failed as a whole: host -> error. */
    this.failedHosts = null;
  }

  /** A worker's key among the answers: its id here, host and id across hosts. */
  keyOf(host, id) {
    return host === undefined ? id : `${host}\0${id}`;
  }

  /** Workers to wait for, listed by the primary (`host`: the host that listed them). */
  expect(host, workers) {
    if (this.expected === null) this.expected = [];
    for (const [id, pid] of workers) {
      const key = this.keyOf(host, id);
      // A worker listed twice is waited for once.
      if (this.listed.has(key)) continue;
      this.expected.push({ host, id, pid });
      this.listed.add(key);
      if (!this.answers.has(key)) this.unanswered += 1;
    }
  }

  /** An Expect frame's list (`list`: its parsed payload, or null for FLAG_ERROR), `error` for a failure. */
  onList(frameHost, list, error) {
    if (frameHost === undefined && Array.isArray(list)) return this.expect(undefined, list);
    if (frameHost === undefined && list) {
      this.me = list.host;
      this.waitingFor = new Set(list.hosts);
      this.failedHosts = new Map();
      return this.expect(this.me, list.workers);
    }
    if (this.expected === null || this.failedHosts === null) return;
    if (this.waitingFor.delete(frameHost)) {
      if (list) this.expect(frameHost, list);
      else this.failedHosts.set(frameHost, error());
    } else if (!list) {
      // A host that listed its workers died before they all answered.
      this.failedHosts.set(frameHost, error());
    }
  }

  /** A worker's answer: `{ status: 'fulfilled', value }` or `{ status: 'rejected', reason }`. */
  onAnswer(host, id, answer) {
    const key = this.keyOf(host ?? this.me, id);
    if (!this.answers.has(key) && this.listed.has(key)) this.unanswered -= 1;
    this.answers.set(key, answer);
  }

  /** The first host that failed, for a map: waiting for the others changes nothing. */
  failure() {
    return this.failedHosts === null || this.failedHosts.size === 0 ? undefined : this.failedHosts.values().next().value;
  }

  /** Whether every listed worker has answered, or cannot (its host failed), and every host listed. */
  done() {
    if (this.expected === null) return false;
    if (this.failedHosts === null) return this.unanswered === 0;
    if (this.waitingFor.size > 0) return false;
    return this.unanswered === 0 || this.expected.every((w) => this.answers.has(this.keyOf(w.host, w.id)) || this.failedHosts.has(w.host));
  }

  /** The entries, ordered: one per listed worker, and one per host that never listed its own. */
  entries() {
    const entries = [];
    const whereOf = (w, status) =>
      this.me === undefined ? { id: w.id, pid: w.pid, status } : { host: w.host, id: w.id, pid: w.pid, status };
    for (const w of this.expected) {
      const answer = this.answers.get(this.keyOf(w.host, w.id));
      if (answer !== undefined && answer.status === 'fulfilled') {
        const entry = whereOf(w, 'fulfilled');
        entry.value = answer.value;
        entries.push(entry);
        continue;
      }
      const reason =
        answer?.reason ??
        this.failedHosts?.get(w.host) ??
        rclusterError('ERR_RCLUSTER_TIMEOUT', `worker ${w.id} did not answer '${this.action}' in time`, { workerId: w.id });
      const entry = whereOf(w, 'rejected');
      entry.reason = reason;
      entries.push(entry);
    }
    if (this.failedHosts !== null) {
      const listed = new Set(this.expected.map((w) => w.host));
      for (const [host, reason] of this.failedHosts) {
        if (!listed.has(host)) entries.push({ host, id: 0, pid: 0, status: 'rejected', reason });
      }
      for (const host of this.waitingFor) {
        const reason = rclusterError('ERR_RCLUSTER_TIMEOUT', `host '${host}' did not list its workers for '${this.action}' in time`, { host });
        entries.push({ host, id: 0, pid: 0, status: 'rejected', reason });
      }
    }
    if (!inOrder(entries)) entries.sort(byHostThenId);
    return entries;
  }
}

// The last list of workers a map was told to wait for: the same, map after map, while the
// cluster does not change, so it is parsed once. (MapAnswers only reads it.)
let lastListText = '';
let lastList = null;

/** An Expect frame's payload, parsed. */
function workerList(text) {
  if (text !== lastListText) {
    lastList = JSON.parse(text);
    lastListText = text;
  }
  return lastList;
}

function byHostThenId(a, b) {
  return a.host === b.host ? a.id - b.id : a.host < b.host ? -1 : 1;
}

function inOrder(entries) {
  for (let i = 1; i < entries.length; i++) if (byHostThenId(entries[i - 1], entries[i]) > 0) return false;
  return true;
}

module.exports = { MapAnswers, workerList };
