// Checks the storage channel with a stalled subscriber: one socket stops reading
// from its WebSocket (its TCP connection is paused) while the test that runs this
// script writes EVENT_COUNT entries, and a healthy socket reads everything. The
// healthy socket must receive every event in commit order. The stalled socket
// must receive a gap-free prefix of the events and then either the rest or a
// disconnect, after which a new socket resuming from its last cursor must
// receive the rest.
//
// Prints `stalled` once both sockets are subscribed and one is paused, then waits
// for COMMIT_ORDER_FILE: the JSON array of the written identifiers in commit
// order, which the test creates when its writes are done. Prints `resuming` when
// the stalled socket reads again and `summary <JSON>` with what it received
// before checking it.
//
// Environment:
//   NIGHTJAR_URL        edge base URL, such as http://127.0.0.1:40123
//   ADMIN_TOKEN         access token of a subject with role admin
//   EVENT_COUNT         number of entries the test writes
//   STALL_MS            how long the stalled socket keeps not reading after the writes end
//   EXPECT_CUT_OFF      "1" when the stall is long enough that the stalled socket must miss
//                       events (then it must be disconnected), "0" when it may get them all
//   COMMIT_ORDER_FILE   path of the file the test writes when its writes are done

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import {
  assertGranted,
  connectStorage,
  edgeUrl,
  requestJwt,
  requireEnv,
  runScenarios,
  show,
  sleep,
} from './lib.mjs';

/** How long the test may take to write the entries. */
const WRITES_MS = 90_000;
/** How long the healthy socket may take to receive every event after the writes end. */
const DELIVERY_MS = 30_000;
/** How long to wait, once the stalled socket reads again, for its disconnection or its last event. */
const OUTCOME_MS = 10_000;

const url = edgeUrl();
const adminToken = requireEnv('ADMIN_TOKEN');
const eventCount = Number(requireEnv('EVENT_COUNT'));
const stallMs = Number(requireEnv('STALL_MS'));
const expectCutOff = requireEnv('EXPECT_CUT_OFF') === '1';
const commitOrderFile = requireEnv('COMMIT_ORDER_FILE');

const device = `nightjar-slow-consumer-${process.pid}`;

let jwt;
let healthy;
let stalled;
let warmupIdentifier;
/** Cursor of the last event the stalled socket received before the stall. */
let stalledCursor;
let webSocket;
let pausedAt;
let stalledDisconnects = [];
/** Identifiers of the written entries in commit order (ascending srvModified). */
let commitOrder = [];
let writesEnded;

/** Returns the identifiers of `socket`'s create events after the warm-up entry. */
function received(socket) {
  return socket.events
    .filter((entry) => entry.event === 'create' && entry.data?.doc?.identifier !== warmupIdentifier)
    .map((entry) => entry.data?.doc?.identifier);
}

/** Waits until `condition()` returns true or `ms` milliseconds pass, and returns its last result. */
async function waitUntil(condition, ms) {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) {
    await sleep(50);
  }
  return condition();
}

/** Returns the index of the first difference between `actual` and the start of `expected`, or -1. */
function firstDifference(actual, expected) {
  for (let i = 0; i < actual.length; i += 1) {
    if (actual[i] !== expected[i]) {
      return i;
    }
  }
  return -1;
}

/** Waits for the test's commit order file and returns the identifiers in it. */
async function readCommitOrder() {
  const present = await waitUntil(() => existsSync(commitOrderFile), WRITES_MS);
  assert.ok(present, `${commitOrderFile} did not appear within ${WRITES_MS} ms`);
  // The test renames the finished file into place, so it is never read half written.
  const identifiers = JSON.parse(readFileSync(commitOrderFile, 'utf8'));
  assert.equal(identifiers.length, eventCount, `identifiers in ${commitOrderFile}`);
  return identifiers;
}

await runScenarios('slow consumer', [
  [
    'two sockets subscribe and one stalls',
    async () => {
      jwt = await requestJwt(url, adminToken);
      healthy = await connectStorage(url, '4', 'healthy socket', ['websocket']);
      stalled = await connectStorage(url, '4', 'stalled socket', ['websocket']);
      stalled.socket.on('disconnect', (reason) => stalledDisconnects.push({ reason, afterEvents: stalled.events.length }));
      for (const socket of [healthy, stalled]) {
        assertGranted(await socket.subscribe({ accessToken: adminToken, collections: ['entries'] }), ['entries'], socket.label);
      }

      // A first entry gives the stalled socket a cursor to resume from.
      const warmup = await fetch(`${url}/api/v3/entries`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${jwt}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ type: 'sgv', sgv: 39, date: Date.now() - 1000, device, app: 'nightjar-e2e' }),
      });
      warmupIdentifier = (await warmup.json()).identifier;
      await healthy.waitForDocument('create', 'entries', warmupIdentifier);
      const event = await stalled.waitForDocument('create', 'entries', warmupIdentifier);
      stalledCursor = event.data.cursor;
      assert.equal(typeof stalledCursor, 'string', `warm-up event has no string cursor: ${show(event.data)}`);

      webSocket = stalled.socket.io.engine.transport.ws;
      assert.ok(webSocket, 'the stalled socket has no WebSocket transport');
      assert.equal(typeof webSocket.pause, 'function', 'the stalled socket\'s WebSocket has no pause()');
      webSocket.pause();
      pausedAt = Date.now();
      console.log('stalled');
    },
  ],
  [
    'healthy socket receives every event in commit order',
    async () => {
      commitOrder = await readCommitOrder();
      writesEnded = Date.now();

      const complete = await waitUntil(() => received(healthy).length >= eventCount, DELIVERY_MS);
      assert.ok(complete, `${healthy.label} received ${received(healthy).length} of ${eventCount} events within ${DELIVERY_MS} ms`);
      await sleep(500);
      const events = received(healthy);
      const difference = firstDifference(events, commitOrder);
      assert.equal(difference, -1, `${healthy.label}: event ${difference} is ${events[difference]}, expected ${commitOrder[difference]}`);
      assert.equal(events.length, eventCount, `${healthy.label}: number of events`);
      assert.ok(healthy.connected, `${healthy.label} was disconnected`);
    },
  ],
  [
    'stalled socket gets a gap-free prefix, then a disconnect or the rest',
    async () => {
      const remaining = writesEnded + stallMs - Date.now();
      if (remaining > 0) {
        await sleep(remaining);
      }
      const beforeResume = { events: received(stalled).length, connected: stalled.connected, disconnects: [...stalledDisconnects] };
      console.log('resuming');
      webSocket.resume();
      const resumedAt = Date.now();
      await waitUntil(() => stalledDisconnects.length > 0 || received(stalled).length >= eventCount, OUTCOME_MS);
      const msToOutcome = Date.now() - resumedAt;
      // Let buffered events arrive after the outcome.
      await sleep(500);

      // A socket still connected without every event may have lost some silently:
      // one more entry after them makes such a gap visible.
      let tail;
      if (stalledDisconnects.length === 0 && received(stalled).length < eventCount) {
        const response = await fetch(`${url}/api/v3/entries`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${jwt}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ type: 'sgv', sgv: 38, date: Date.now() - 500, device, app: 'nightjar-e2e' }),
        });
        tail = (await response.json()).identifier;
        await healthy.waitForDocument('create', 'entries', tail);
        await sleep(1000);
      }
      const expected = tail ? [...commitOrder, tail] : commitOrder;

      const events = received(stalled);
      const difference = firstDifference(events, expected);
      const lastEvent = stalled.events[stalled.events.length - 1];
      const summary = {
        eventCount,
        beforeResume,
        stalledForMs: resumedAt - pausedAt,
        afterResume: { events: events.length, connected: stalled.connected, disconnects: stalledDisconnects, msToOutcome },
        tailWritten: tail !== undefined,
        firstDifference: difference,
        missingFrom: difference === -1 ? null : { expected: expected[difference], received: events[difference], missed: expected.indexOf(events[difference]) - difference },
        duplicates: events.length - new Set(events).size,
      };
      console.log(`summary ${JSON.stringify(summary)}`);

      assert.equal(summary.duplicates, 0, `${stalled.label} received duplicates`);
      assert.equal(
        difference,
        -1,
        `${stalled.label}: event ${difference} is ${events[difference]}, expected ${expected[difference]}: ` +
          `${summary.missingFrom?.missed} events were dropped while the socket stayed connected`,
      );
      assert.ok(
        stalledDisconnects.length > 0 || events.length >= eventCount,
        `${stalled.label} received ${events.length} of ${eventCount} events and was not disconnected within ${OUTCOME_MS} ms of reading again`,
      );
      if (expectCutOff) {
        assert.ok(events.length < eventCount, `${stalled.label} received every event: the stall held nothing back, so it tested nothing`);
      }
      if (lastEvent) {
        stalledCursor = lastEvent.data.cursor;
      }
    },
  ],
  [
    'stalled client resumes from its last cursor and gets the rest',
    async () => {
      const delivered = received(stalled);
      if (delivered.length >= eventCount) {
        return;
      }
      const resumed = await connectStorage(url, '4', 'resumed socket', ['websocket']);
      try {
        const ack = await resumed.subscribe({ accessToken: adminToken, collections: ['entries'], cursor: stalledCursor });
        assertGranted(ack, ['entries'], 'resume of the stalled client');
        assert.notEqual(ack.historyLost, true, `resume of the stalled client reported historyLost: ${show(ack)}`);
        const rest = commitOrder.length - delivered.length;
        const complete = await waitUntil(() => received(resumed).length >= rest, DELIVERY_MS);
        assert.ok(complete, `${resumed.label} received ${received(resumed).length} of the ${rest} missed events within ${DELIVERY_MS} ms`);
        await sleep(500);
        const combined = [...delivered, ...received(resumed)];
        const difference = firstDifference(combined, commitOrder);
        assert.equal(difference, -1, `stalled then resumed: event ${difference} is ${combined[difference]}, expected ${commitOrder[difference]}`);
        assert.equal(combined.length, eventCount, 'stalled then resumed: number of events');
      } finally {
        resumed.close();
      }
    },
  ],
]);
