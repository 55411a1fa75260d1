// Checks that changes to subjects and roles reach open subscriptions within a
// second: a deleted subject's sockets are all disconnected, and a socket whose role
// lost a collection stops receiving that collection's events but keeps the rest.
//
// Environment:
//   NIGHTJAR_URL       edge base URL of a server started with AUTH_DEFAULT_ROLES=denied
//                      and a non-zero AUTH_FAIL_DELAY
//   SOCKET_IO_CLIENT   "4" (socket.io-client 4.x) or "2" (socket.io-client 2.2.0)
//   ADMIN_TOKEN        access token of a subject with role admin
//   API_SECRET_HASH    SHA-1 hex of API_SECRET, for the admin endpoints
//   VICTIM_TOKEN       access token of a subject with role readable, deleted here
//   PARTIAL_TOKEN      access token of a subject with role two-collections

import assert from 'node:assert/strict';

import { apiV3, clientVersion, connectStorage, edgeUrl, requestJwt, requireEnv, runScenarios, sleep } from './lib.mjs';

/** Longest time a revocation may take to reach a subscription, in milliseconds. */
const REVOCATION_MS = 1000;

const url = edgeUrl();
const version = clientVersion();
const secretHash = requireEnv('API_SECRET_HASH');
const adminJwt = await requestJwt(url, requireEnv('ADMIN_TOKEN'));

/** Sends a request to the v2 admin API with the api-secret header and returns the parsed body. */
async function admin(method, path, body) {
  const response = await fetch(`${url}/api/v2/authorization${path}`, {
    method,
    headers: { 'api-secret': secretHash, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, 200, `${method} ${path} returned ${response.status}: ${text}`);
  return JSON.parse(text);
}

let minute = 0;
/** Creates a document in `collection` and returns its identifier. */
async function create(collection) {
  minute += 1;
  const date = 1_733_300_000_000 + minute * 60_000;
  const document = collection === 'entries'
    ? { date, sgv: 100, type: 'sgv', device: 'revocation', app: 'test' }
    : { date, eventType: 'Note', notes: 'revocation', device: 'revocation', app: 'test' };
  const reply = await apiV3(url, adminJwt, 'POST', `/${collection}`, document, 201);
  return reply.body.identifier;
}

/** Polls until `condition` holds, failing after `ms` milliseconds. */
async function within(ms, description, condition) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `${description} did not happen within ${ms} ms`);
    await sleep(20);
  }
}

await runScenarios(`revocation, client ${version}`, [
  [
    'deleting a subject disconnects all its sockets',
    async () => {
      // Several sockets from one address: rechecking them must not wait out the
      // failed-login delay (the server runs with AUTH_FAIL_DELAY set).
      const token = requireEnv('VICTIM_TOKEN');
      const sockets = [];
      try {
        for (let index = 0; index < 3; index += 1) {
          sockets.push(await connectStorage(url, version, `victim-${index}`));
        }
        for (const socket of sockets) {
          const ack = await socket.subscribe({ accessToken: token, collections: ['entries'] });
          assert.equal(ack.success, true, `subscribe failed: ${JSON.stringify(ack)}`);
        }
        const before = await create('entries');
        for (const socket of sockets) {
          await socket.waitForDocument('create', 'entries', before);
        }

        const subjects = await admin('GET', '/subjects');
        const victim = subjects.find((subject) => subject.accessToken === token);
        assert.ok(victim, `no subject with the victim's token among ${JSON.stringify(subjects)}`);
        await admin('DELETE', `/subjects/${victim._id}`);

        await within(
          REVOCATION_MS,
          'disconnection of every socket of the deleted subject',
          () => sockets.every((socket) => !socket.connected),
        );
      } finally {
        for (const socket of sockets) {
          socket.close();
        }
      }
    },
  ],
  [
    'removing a permission stops that collection only',
    async () => {
      const socket = await connectStorage(url, version, 'partial');
      try {
        const ack = await socket.subscribe({ accessToken: requireEnv('PARTIAL_TOKEN'), collections: ['entries', 'treatments'] });
        assert.deepEqual([...ack.collections].sort(), ['entries', 'treatments'], `granted: ${JSON.stringify(ack)}`);

        const roles = await admin('GET', '/roles');
        const role = roles.find((candidate) => candidate.name === 'two-collections');
        assert.ok(role, `role two-collections missing from ${JSON.stringify(roles)}`);
        await admin('PUT', '/roles', { ...role, permissions: ['api:treatments:read'] });
        await sleep(REVOCATION_MS);

        const entry = await create('entries');
        const treatment = await create('treatments');
        await socket.waitForDocument('create', 'treatments', treatment);
        assert.equal(socket.connected, true, 'the socket was disconnected although treatments stay granted');
        assert.deepEqual(socket.eventsAbout(entry), [], 'an entries event arrived after entries read was removed');
      } finally {
        socket.close();
      }
    },
  ],
]);
