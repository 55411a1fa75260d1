// Checks that storage events carry a cursor and that `subscribe` with a cursor
// delivers exactly the events missed since that cursor, in commit order, then
// the live ones, with no duplicate or gap at the seam between the two.
//
// Environment:
//   NIGHTJAR_URL       edge base URL, such as http://127.0.0.1:40123
//   SOCKET_IO_CLIENT   "4" (socket.io-client 4.x) or "2" (socket.io-client 2.2.0)
//   ADMIN_TOKEN        access token of a subject with role admin

import assert from 'node:assert/strict';
import {
  SETTLE_MS,
  apiV3,
  assertGranted,
  assertRejected,
  clientVersion,
  connectStorage,
  edgeUrl,
  requestJwt,
  requireEnv,
  runScenarios,
  show,
  sleep,
} from './lib.mjs';

const url = edgeUrl();
const version = clientVersion();
const adminToken = requireEnv('ADMIN_TOKEN');

/** Entries written while no socket is subscribed. */
const MISSED_ENTRIES = 12;
/** Entries written one after another while the resuming socket subscribes and replays. */
const LIVE_ENTRIES = 15;

const device = `nightjar-resume-client${version}-${process.pid}`;
const app = 'nightjar-e2e';
// Whole seconds, ten minutes in the past, so each document below gets its own date.
const baseDate = Math.floor(Date.now() / 1000) * 1000 - 600_000;
let nextOffset = 0;

let jwt;

/** Creates an entry through REST and returns its identifier. */
async function createEntry(sgv) {
  nextOffset += 1000;
  const body = { type: 'sgv', sgv, date: baseDate + nextOffset, device, app };
  const response = await apiV3(url, jwt, 'POST', '/entries', body, 201);
  const identifier = response.body?.identifier;
  assert.equal(typeof identifier, 'string', `POST /api/v3/entries returned no identifier: ${show(response.body)}`);
  return identifier;
}

/** Creates a treatment through REST and returns its identifier. */
async function createTreatment() {
  nextOffset += 1000;
  const body = { eventType: 'Note', notes: 'resume test', created_at: new Date(baseDate + nextOffset).toISOString(), device, app };
  const response = await apiV3(url, jwt, 'POST', '/treatments', body, 201);
  return response.body.identifier;
}

/** Returns the identifier an event is about. */
function identifierOf(entry) {
  return entry.event === 'delete' ? entry.data?.identifier : entry.data?.doc?.identifier;
}

/** Returns `[event, colName, identifier]` triples of recorded events, for comparisons. */
function summary(socket) {
  return socket.events.map((entry) => [entry.event, entry.data?.colName, identifierOf(entry)]);
}

/** Asserts that every event of `socket` carries a non-empty string cursor, each one different. */
function assertCursors(socket) {
  const cursors = socket.events.map((entry) => entry.data?.cursor);
  for (const [index, cursor] of cursors.entries()) {
    assert.equal(typeof cursor, 'string', `${socket.label}: event ${index} has no string cursor: ${show(socket.events[index].data)}`);
    assert.notEqual(cursor, '', `${socket.label}: event ${index} has an empty cursor`);
  }
  assert.equal(new Set(cursors).size, cursors.length, `${socket.label}: cursors repeat: ${show(cursors)}`);
}

/** Waits until `socket` has recorded an event about `identifier`, then lets late events arrive. */
async function settleAfter(socket, event, colName, identifier) {
  await socket.waitForDocument(event, colName, identifier);
  await sleep(SETTLE_MS);
}

// The cursor of the last event the first socket saw before disconnecting.
let resumeCursor;
// Events expected on resuming from `resumeCursor`, as [event, colName, identifier].
const expected = [];
// The cursor of the last event the resuming socket saw.
let lastReplayedCursor;

await runScenarios(`resume from a cursor, client ${version}`, [
  [
    'events carry reference fields and a cursor',
    async () => {
      jwt = await requestJwt(url, adminToken);
      const socket = await connectStorage(url, version, 'first socket');
      try {
        const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'] });
        assertGranted(ack, ['entries'], 'subscribe without cursor');
        assert.equal(ack.historyLost, undefined, `subscribe without cursor: unexpected historyLost in ${show(ack)}`);

        const identifier = await createEntry(100);
        const event = await socket.waitForDocument('create', 'entries', identifier);
        assert.equal(event.data.colName, 'entries', `create event ${show(event.data)}: colName`);
        assert.equal(event.data.doc.identifier, identifier, `create event ${show(event.data)}: doc.identifier`);
        assert.equal(event.data.doc.sgv, 100, `create event ${show(event.data)}: doc.sgv`);
        assertCursors(socket);
        resumeCursor = event.data.cursor;
      } finally {
        socket.close();
      }
    },
  ],
  [
    'resume replays the missed events, then live ones',
    async () => {
      // 1. Writes while disconnected: creates, a patch, a soft delete, and a
      //    treatment, which an entries-only subscription must not replay.
      const missed = [];
      for (let i = 0; i < MISSED_ENTRIES; i += 1) {
        missed.push(await createEntry(110 + i));
      }
      for (const identifier of missed) {
        expected.push(['create', 'entries', identifier]);
      }
      await apiV3(url, jwt, 'PATCH', `/entries/${missed[2]}`, { sgv: 250 }, 200);
      expected.push(['update', 'entries', missed[2]]);
      await createTreatment();
      await apiV3(url, jwt, 'DELETE', `/entries/${missed[4]}`, undefined, 200);
      expected.push(['delete', 'entries', missed[4]]);

      // 2. A writer that keeps going while the socket subscribes and replays, so
      //    the handover from replay to live events happens during writes.
      const live = [];
      const writer = (async () => {
        for (let i = 0; i < LIVE_ENTRIES; i += 1) {
          live.push(await createEntry(200 + i));
        }
      })();

      const socket = await connectStorage(url, version, 'resuming socket');
      try {
        const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'], cursor: resumeCursor });
        assertGranted(ack, ['entries'], 'subscribe with a recent cursor');
        assert.notEqual(ack.historyLost, true, `subscribe with a recent cursor reported historyLost: ${show(ack)}`);

        await writer;
        for (const identifier of live) {
          expected.push(['create', 'entries', identifier]);
        }
        await settleAfter(socket, 'create', 'entries', live[live.length - 1]);

        assert.deepEqual(summary(socket), expected, `${socket.label}: events after cursor ${resumeCursor}`);
        assertCursors(socket);
        const patched = socket.events.find((entry) => entry.event === 'update');
        assert.equal(patched.data.doc.sgv, 250, `replayed update event ${show(patched.data)}: doc.sgv`);
        assert.equal(patched.data.doc.type, 'sgv', `replayed update event ${show(patched.data)}: doc.type of the merged document`);
        assert.ok(socket.connected, `${socket.label} was disconnected`);
        lastReplayedCursor = socket.events[socket.events.length - 1].data.cursor;
      } finally {
        socket.close();
      }
    },
  ],
  [
    'resume from the last event cursor sends nothing twice',
    async () => {
      const socket = await connectStorage(url, version, 'second resuming socket');
      try {
        const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'], cursor: lastReplayedCursor });
        assertGranted(ack, ['entries'], 'subscribe with the last cursor');
        await sleep(SETTLE_MS);
        assert.deepEqual(summary(socket), [], `${socket.label}: events after the last cursor before any new write`);

        const identifier = await createEntry(300);
        await settleAfter(socket, 'create', 'entries', identifier);
        assert.deepEqual(summary(socket), [['create', 'entries', identifier]], `${socket.label}: events after one new write`);
      } finally {
        socket.close();
      }
    },
  ],
  [
    'resume without collections replays every granted collection',
    async () => {
      const socket = await connectStorage(url, version, 'all-collections resuming socket');
      try {
        const ack = await socket.subscribe({ accessToken: adminToken, cursor: resumeCursor });
        assert.equal(ack?.success, true, `subscribe with a cursor and no collections: ${show(ack)}`);
        const marker = await createEntry(310);
        await settleAfter(socket, 'create', 'entries', marker);

        const entries = summary(socket).filter(([, colName]) => colName === 'entries');
        const treatments = summary(socket).filter(([, colName]) => colName === 'treatments');
        // `expected` ends with the entries of earlier scenarios; two more followed.
        assert.deepEqual(entries.slice(0, expected.length), expected, `${socket.label}: replayed entries events`);
        assert.equal(entries.length, expected.length + 2, `${socket.label}: entries events ${show(entries)}`);
        assert.equal(treatments.length, 1, `${socket.label}: treatments events ${show(treatments)}`);
        assertCursors(socket);
      } finally {
        socket.close();
      }
    },
  ],
  [
    'subscribe without cursor receives only live events',
    async () => {
      const socket = await connectStorage(url, version, 'live-only socket');
      try {
        assertGranted(await socket.subscribe({ accessToken: adminToken, collections: ['entries'] }), ['entries'], 'subscribe without cursor');
        await sleep(SETTLE_MS);
        assert.deepEqual(summary(socket), [], `${socket.label}: events before any new write`);

        const identifier = await createEntry(320);
        await settleAfter(socket, 'create', 'entries', identifier);
        assert.deepEqual(summary(socket), [['create', 'entries', identifier]], `${socket.label}: events after one write`);
        assertCursors(socket);
      } finally {
        socket.close();
      }
    },
  ],
  [
    'malformed cursor is rejected',
    async () => {
      const socket = await connectStorage(url, version, 'malformed cursor socket');
      try {
        for (const cursor of ['not-a-cursor', '-1', '12abc', { position: 1 }, [resumeCursor], true]) {
          const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'], cursor });
          assertRejected(ack, 'Bad cursor', `cursor ${show(cursor)}`);
        }

        // The rejected subscriptions joined nothing; a valid one still works.
        const identifier = await createEntry(330);
        await sleep(SETTLE_MS);
        assert.deepEqual(summary(socket), [], `${socket.label}: events after only rejected subscriptions`);
        const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'] });
        assertGranted(ack, ['entries'], 'subscribe without cursor after rejected ones');
        assert.ok(!socket.eventsAbout(identifier).length, `${socket.label}: received an event written before it subscribed`);
      } finally {
        socket.close();
      }
    },
  ],
]);
