'use strict';
// The map scenarios of the messenger bench, the same for every contender: `map()` asks every
// worker and resolves with their answers.

/** Sequential round trips, each timed; or `inFlight` at a time, counted per second. */
async function runMaps({ count, inFlight }, map) {
  // Maps before the measured ones, not counted: JIT warm-up (as for every contender).
  if (inFlight) {
    await keepInFlight(Math.ceil(count / 10), inFlight, map);
    const start = process.hrtime.bigint();
    await keepInFlight(count, inFlight, map);
    return { mapsPerSecond: count / (Number(process.hrtime.bigint() - start) / 1e9) };
  }
  for (let i = 0; i < count / 10; i++) await map();
  const latencies = [];
  for (let i = 0; i < count; i++) {
    const start = process.hrtime.bigint();
    await map();
    latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return { latencies };
}

/** `count` maps, a new one started as each ends, `depth` at a time. */
async function keepInFlight(count, depth, map) {
  let started = 0;
  const lane = async () => {
    while (started < count) {
      started += 1;
      await map();
    }
  };
  await Promise.all(Array.from({ length: depth }, lane));
}

module.exports = { runMaps };
