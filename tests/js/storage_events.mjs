// Checks the create, update and delete events of the /storage namespace that
// follow APIv3 REST writes, and that each socket receives only the collections
// it was granted.
//
// The server must run with AUTH_DEFAULT_ROLES=denied, so that the treatments
// reader cannot read entries.
//
// Environment:
//   NIGHTJAR_URL              edge base URL, such as http://127.0.0.1:40123
//   SOCKET_IO_CLIENT          "4" (socket.io-client 4.x) or "2" (socket.io-client 2.2.0)
//   ADMIN_TOKEN               access token of a subject with role admin
//   TREATMENTS_READER_TOKEN   access token of a subject whose only permission is api:treatments:read

import assert from 'node:assert/strict';
import {
  ALL_COLLECTIONS,
  SETTLE_MS,
  apiV3,
  assertGranted,
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
const treatmentsReaderToken = requireEnv('TREATMENTS_READER_TOKEN');

let jwt;

// Every document of this run carries this device, so its identifiers are its own.
const device = `nightjar-e2e-client${version}-${process.pid}`;
const app = 'nightjar-e2e';
// Whole seconds, a minute in the past, so each entry below gets its own date.
const baseDate = Math.floor(Date.now() / 1000) * 1000 - 60_000;

/**
 * Asserts that `entry` is a create or update event of `colName` whose document
 * has `identifier`, every field of `sent`, a numeric srvModified and srvCreated,
 * and no `_id`. Returns the document.
 */
function assertDocumentEvent(entry, event, colName, identifier, sent) {
  const context = `${event} event ${show(entry.data)}`;
  assert.equal(entry.event, event, `expected a ${event} event, got ${entry.event}: ${show(entry.data)}`);
  assert.equal(entry.data.colName, colName, `${context}: colName`);

  const doc = entry.data.doc;
  assert.ok(doc && typeof doc === 'object' && !Array.isArray(doc), `${context}: doc is not an object`);
  assert.equal(doc.identifier, identifier, `${context}: doc.identifier`);
  assert.ok(Number.isInteger(doc.srvModified), `${context}: doc.srvModified is not an integer number`);
  assert.ok(Number.isInteger(doc.srvCreated), `${context}: doc.srvCreated is not an integer number`);
  assert.ok(!('_id' in doc), `${context}: doc exposes _id`);
  for (const [field, value] of Object.entries(sent)) {
    assert.deepEqual(doc[field], value, `${context}: doc.${field} differs from the value sent, ${show(value)}`);
  }
  return doc;
}

/** Asserts that `socket` received exactly `expected` (a list of event names) about `identifier`. */
async function assertEventSequence(socket, identifier, expected) {
  await sleep(SETTLE_MS);
  const received = socket.eventsAbout(identifier).map((entry) => entry.event);
  assert.deepEqual(
    received,
    expected,
    `${socket.label}: events about ${identifier} ${show(socket.eventsAbout(identifier))}`,
  );
}

/** Creates an entry through REST and returns `{identifier, body, response}`. */
async function createEntry(offsetMs, sgv) {
  const body = { type: 'sgv', sgv, direction: 'Flat', date: baseDate + offsetMs, device, app };
  const response = await apiV3(url, jwt, 'POST', '/entries', body, 201);
  const identifier = response.body?.identifier;
  assert.equal(typeof identifier, 'string', `POST /api/v3/entries returned no identifier: ${show(response.body)}`);
  return { identifier, body, response: response.body };
}

// One socket granted every collection, one granted only treatments.
let admin;
let treatmentsOnly;
// The entry that the create, update and soft delete scenarios work on.
let entry;
let lastSrvModified;

await runScenarios(`storage events, client ${version}`, [
  [
    'sockets subscribe',
    async () => {
      jwt = await requestJwt(url, adminToken);
      admin = await connectStorage(url, version, 'admin socket');
      assertGranted(await admin.subscribe({ accessToken: adminToken }), ALL_COLLECTIONS, 'admin, all collections');

      treatmentsOnly = await connectStorage(url, version, 'treatments reader socket');
      const ack = await treatmentsOnly.subscribe({ accessToken: treatmentsReaderToken });
      assertGranted(ack, ['treatments'], 'treatments reader, all collections');
    },
  ],
  [
    'POST sends create',
    async () => {
      entry = await createEntry(0, 120);
      const event = await admin.waitForDocument('create', 'entries', entry.identifier);
      const doc = assertDocumentEvent(event, 'create', 'entries', entry.identifier, entry.body);
      assert.equal(doc.srvModified, entry.response.lastModified, `create event srvModified differs from lastModified of POST ${show(entry.response)}`);
      lastSrvModified = doc.srvModified;
    },
  ],
  [
    'deduplicating POST sends update',
    async () => {
      const body = { ...entry.body, identifier: entry.identifier, sgv: 121 };
      const response = await apiV3(url, jwt, 'POST', '/entries', body, 200);
      assert.equal(response.body?.isDeduplication, true, `POST of a duplicate: ${show(response.body)}`);

      const event = await admin.waitFor(`update event with sgv 121 for ${entry.identifier}`, (e) =>
        e.event === 'update' && e.data?.doc?.identifier === entry.identifier && e.data.doc.sgv === 121,
      );
      const doc = assertDocumentEvent(event, 'update', 'entries', entry.identifier, body);
      assert.ok(doc.srvModified > lastSrvModified, `srvModified ${doc.srvModified} is not above the previous ${lastSrvModified}`);
      lastSrvModified = doc.srvModified;
    },
  ],
  [
    'PUT sends update',
    async () => {
      const body = { ...entry.body, sgv: 122 };
      await apiV3(url, jwt, 'PUT', `/entries/${entry.identifier}`, body, 200);

      const event = await admin.waitFor(`update event with sgv 122 for ${entry.identifier}`, (e) =>
        e.event === 'update' && e.data?.doc?.identifier === entry.identifier && e.data.doc.sgv === 122,
      );
      const doc = assertDocumentEvent(event, 'update', 'entries', entry.identifier, body);
      assert.ok(doc.srvModified > lastSrvModified, `srvModified ${doc.srvModified} is not above the previous ${lastSrvModified}`);
      lastSrvModified = doc.srvModified;
    },
  ],
  [
    'PATCH sends update with the merged document',
    async () => {
      const patch = { sgv: 123, noise: 1 };
      await apiV3(url, jwt, 'PATCH', `/entries/${entry.identifier}`, patch, 200);

      const event = await admin.waitFor(`update event with sgv 123 for ${entry.identifier}`, (e) =>
        e.event === 'update' && e.data?.doc?.identifier === entry.identifier && e.data.doc.sgv === 123,
      );
      // The fields the patch did not name must still be there.
      const merged = { ...entry.body, ...patch };
      const doc = assertDocumentEvent(event, 'update', 'entries', entry.identifier, merged);
      assert.equal(typeof doc.modifiedBy, 'string', `PATCH update event has no modifiedBy: ${show(doc)}`);
      assert.ok(doc.srvModified > lastSrvModified, `srvModified ${doc.srvModified} is not above the previous ${lastSrvModified}`);
      lastSrvModified = doc.srvModified;
    },
  ],
  [
    'soft DELETE sends delete',
    async () => {
      await apiV3(url, jwt, 'DELETE', `/entries/${entry.identifier}`, undefined, 200);

      const event = await admin.waitForDocument('delete', 'entries', entry.identifier);
      assert.equal(event.data.colName, 'entries', `delete event ${show(event.data)}: colName`);
      assert.equal(event.data.identifier, entry.identifier, `delete event ${show(event.data)}: identifier`);

      await assertEventSequence(admin, entry.identifier, ['create', 'update', 'update', 'update', 'delete']);
    },
  ],
  [
    'permanent DELETE sends delete',
    async () => {
      const permanent = await createEntry(1000, 140);
      const created = await admin.waitForDocument('create', 'entries', permanent.identifier);
      assertDocumentEvent(created, 'create', 'entries', permanent.identifier, permanent.body);

      await apiV3(url, jwt, 'DELETE', `/entries/${permanent.identifier}?permanent=true`, undefined, 200);
      const event = await admin.waitForDocument('delete', 'entries', permanent.identifier);
      assert.equal(event.data.identifier, permanent.identifier, `delete event ${show(event.data)}: identifier`);

      await assertEventSequence(admin, permanent.identifier, ['create', 'delete']);
    },
  ],
  [
    'treatments events reach both sockets',
    async () => {
      const body = {
        eventType: 'Note',
        notes: `storage events, client ${version}`,
        created_at: new Date(baseDate + 2000).toISOString(),
        device,
        app,
      };
      const response = await apiV3(url, jwt, 'POST', '/treatments', body, 201);
      const identifier = response.body?.identifier;

      for (const socket of [admin, treatmentsOnly]) {
        const event = await socket.waitForDocument('create', 'treatments', identifier);
        assertDocumentEvent(event, 'create', 'treatments', identifier, { eventType: 'Note', notes: body.notes, device, app });
      }
    },
  ],
  [
    'grants accumulate over subscribes',
    async () => {
      const socket = await connectStorage(url, version, 'accumulating socket');
      try {
        const treatments = await socket.subscribe({ accessToken: adminToken, collections: ['treatments'] });
        assertGranted(treatments, ['treatments'], 'admin, treatments');

        // An entry written before the socket subscribes to entries must not reach it.
        const before = await createEntry(3000, 150);
        await admin.waitForDocument('create', 'entries', before.identifier);
        await assertEventSequence(socket, before.identifier, []);

        const entries = await socket.subscribe({ accessToken: adminToken, collections: ['entries'] });
        assertGranted(entries, ['entries'], 'admin, entries');

        const after = await createEntry(4000, 160);
        const event = await socket.waitForDocument('create', 'entries', after.identifier);
        assertDocumentEvent(event, 'create', 'entries', after.identifier, after.body);

        const note = { eventType: 'Note', created_at: new Date(baseDate + 5000).toISOString(), device, app };
        const response = await apiV3(url, jwt, 'POST', '/treatments', note, 201);
        await socket.waitForDocument('create', 'treatments', response.body?.identifier);
      } finally {
        socket.close();
      }
    },
  ],
  [
    'treatments-only socket receives no entries events',
    async () => {
      await sleep(SETTLE_MS);
      const foreign = treatmentsOnly.events.filter((entry) => entry.data?.colName !== 'treatments');
      assert.deepEqual(foreign, [], `${treatmentsOnly.label} received events of other collections`);
      assert.ok(treatmentsOnly.events.length > 0, `${treatmentsOnly.label} received no events at all`);
      assert.ok(treatmentsOnly.connected, `${treatmentsOnly.label} was disconnected`);
      assert.ok(admin.connected, `${admin.label} was disconnected`);
    },
  ],
]);
