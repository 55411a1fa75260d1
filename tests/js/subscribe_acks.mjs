// Checks the acknowledgement of `subscribe` on the /storage namespace for every
// kind of credential and payload.
//
// The server must run with AUTH_DEFAULT_ROLES=denied, so that each subject holds
// only the permissions of its own roles.
//
// Environment:
//   NIGHTJAR_URL              edge base URL, such as http://127.0.0.1:40123
//   SOCKET_IO_CLIENT          "4" (socket.io-client 4.x) or "2" (socket.io-client 2.2.0)
//   ADMIN_TOKEN               access token of a subject with role admin
//   DENIED_TOKEN              access token of a subject with role denied
//   READABLE_TOKEN            access token of a subject with role readable
//   TREATMENTS_READER_TOKEN   access token of a subject whose only permission is api:treatments:read
//   SETTINGS_ADMIN_TOKEN      access token of a subject whose only permission is api:settings:admin
//   API_SECRET                the server's API_SECRET

import assert from 'node:assert/strict';
import {
  ALL_COLLECTIONS,
  assertGranted,
  assertRejected,
  clientVersion,
  connectStorage,
  edgeUrl,
  requestJwt,
  requireEnv,
  runScenarios,
  sleep,
} from './lib.mjs';

const BAD_TOKEN = 'Missing or bad accessToken';
const NOTHING_GRANTED = 'Unauthorized to receive any collection';

const url = edgeUrl();
const version = clientVersion();
const adminToken = requireEnv('ADMIN_TOKEN');
const deniedToken = requireEnv('DENIED_TOKEN');
const readableToken = requireEnv('READABLE_TOKEN');
const treatmentsReaderToken = requireEnv('TREATMENTS_READER_TOKEN');
const settingsAdminToken = requireEnv('SETTINGS_ADMIN_TOKEN');
const apiSecret = requireEnv('API_SECRET');

const READABLE_COLLECTIONS = ALL_COLLECTIONS.filter((name) => name !== 'settings');

/** Opens a socket, passes it to `body`, and closes it afterwards. */
async function withSocket(label, body, transports) {
  const socket = await connectStorage(url, version, label, transports);
  try {
    await body(socket);
  } finally {
    socket.close();
  }
}

await runScenarios(`subscribe acknowledgements, client ${version}`, [
  [
    'payload without accessToken is rejected',
    () =>
      withSocket('no token', async (socket) => {
        assertRejected(await socket.subscribe({}), BAD_TOKEN, 'payload {}');
        assertRejected(await socket.subscribe({ collections: ['entries'] }), BAD_TOKEN, 'payload with collections only');
      }),
  ],
  [
    'unknown accessToken is rejected',
    () =>
      withSocket('unknown token', async (socket) => {
        const unknown = { accessToken: 'nosuchsubj-0123456789abcdef' };
        assertRejected(await socket.subscribe(unknown), BAD_TOKEN, 'unknown access token');
        assertRejected(await socket.subscribe({ accessToken: '' }), BAD_TOKEN, 'empty access token');
        assertRejected(await socket.subscribe({ accessToken: 42 }), BAD_TOKEN, 'numeric access token');
      }),
  ],
  [
    'oversized accessToken is rejected',
    () =>
      withSocket('oversized token', async (socket) => {
        const oversized = { accessToken: 'a'.repeat(5000), collections: ['entries'] };
        assertRejected(await socket.subscribe(oversized), BAD_TOKEN, 'token of 5000 characters');
      }),
  ],
  [
    'WebSocket message over 1 MB closes the socket',
    () =>
      withSocket('oversized message', async (socket) => {
        const disconnected = new Promise((resolve) => socket.socket.once('disconnect', resolve));
        socket.socket.emit('subscribe', { accessToken: 'a'.repeat(1_500_000) });
        const reason = await Promise.race([disconnected, sleep(10_000).then(() => 'still connected')]);
        assert.notEqual(reason, 'still connected', 'a 1.5 MB WebSocket message did not close the socket');
      }, ['websocket']),
  ],
  [
    'JWT and API_SECRET are not access tokens',
    () =>
      withSocket('other credentials', async (socket) => {
        const jwt = await requestJwt(url, adminToken);
        assertRejected(await socket.subscribe({ accessToken: jwt }), BAD_TOKEN, 'JWT of the admin subject');
        assertRejected(await socket.subscribe({ accessToken: apiSecret }), BAD_TOKEN, 'API_SECRET');
      }),
  ],
  [
    'payload that is not an object is rejected',
    () =>
      withSocket('non-object payloads', async (socket) => {
        assertRejected(await socket.subscribe(42), BAD_TOKEN, 'payload 42');
        // A valid token sent as a bare string is still not a subscription request.
        assertRejected(await socket.subscribe(adminToken), BAD_TOKEN, 'payload that is the admin token as a string');
        assertRejected(await socket.subscribe(), BAD_TOKEN, 'no payload');
        assertRejected(await socket.subscribe(null), BAD_TOKEN, 'payload null');
        assertRejected(await socket.subscribe(true), BAD_TOKEN, 'payload true');
        assertRejected(await socket.subscribe([{ accessToken: adminToken }]), BAD_TOKEN, 'payload that is an array');
      }),
  ],
  [
    'subject without permissions is granted nothing',
    () =>
      withSocket('denied subject', async (socket) => {
        assertRejected(await socket.subscribe({ accessToken: deniedToken }), NOTHING_GRANTED, 'denied, all collections');
        const entries = { accessToken: deniedToken, collections: ['entries'] };
        assertRejected(await socket.subscribe(entries), NOTHING_GRANTED, 'denied, entries');
      }),
  ],
  [
    'partial permissions grant only their collections',
    () =>
      withSocket('treatments reader', async (socket) => {
        const all = await socket.subscribe({ accessToken: treatmentsReaderToken });
        assertGranted(all, ['treatments'], 'treatments reader, all collections');

        const both = { accessToken: treatmentsReaderToken, collections: ['entries', 'treatments'] };
        assertGranted(await socket.subscribe(both), ['treatments'], 'treatments reader, entries and treatments');

        const entries = { accessToken: treatmentsReaderToken, collections: ['entries'] };
        assertRejected(await socket.subscribe(entries), NOTHING_GRANTED, 'treatments reader, entries only');
      }),
  ],
  [
    'unknown collection names are ignored',
    () =>
      withSocket('unknown collections', async (socket) => {
        const foods = { accessToken: treatmentsReaderToken, collections: ['foods', 'treatments'] };
        assertGranted(await socket.subscribe(foods), ['treatments'], 'treatments reader, foods and treatments');

        const onlyUnknown = { accessToken: adminToken, collections: ['foods', 'nosuchcollection'] };
        assertRejected(await socket.subscribe(onlyUnknown), NOTHING_GRANTED, 'admin, unknown collections only');
      }),
  ],
  [
    'settings needs api:settings:admin',
    () =>
      withSocket('settings', async (socket) => {
        const readable = await socket.subscribe({ accessToken: readableToken });
        assertGranted(readable, READABLE_COLLECTIONS, 'readable, all collections');

        const readableSettings = { accessToken: readableToken, collections: ['settings'] };
        assertRejected(await socket.subscribe(readableSettings), NOTHING_GRANTED, 'readable, settings');

        const settingsAdmin = await socket.subscribe({ accessToken: settingsAdminToken });
        assertGranted(settingsAdmin, ['settings'], 'api:settings:admin, all collections');

        assertGranted(await socket.subscribe({ accessToken: adminToken }), ALL_COLLECTIONS, 'admin, all collections');
      }),
  ],
  [
    'collections that is not an array counts as omitted',
    () =>
      withSocket('collections not an array', async (socket) => {
        const text = await socket.subscribe({ accessToken: adminToken, collections: 'entries' });
        assertGranted(text, ALL_COLLECTIONS, 'admin, collections "entries"');

        const object = await socket.subscribe({ accessToken: treatmentsReaderToken, collections: { entries: true } });
        assertGranted(object, ['treatments'], 'treatments reader, collections object');
      }),
  ],
  [
    'subscribe works over WebSocket only',
    () =>
      withSocket(
        'websocket only',
        async (socket) => {
          const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'] });
          assertGranted(ack, ['entries'], 'admin over WebSocket');
        },
        ['websocket'],
      ),
  ],
  [
    'subscribe works over long-polling only',
    () =>
      withSocket(
        'long-polling only',
        async (socket) => {
          const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'] });
          assertGranted(ack, ['entries'], 'admin over long-polling');
        },
        ['polling'],
      ),
  ],
  [
    'server stays up after bad payloads',
    async () => {
      await withSocket('bad payloads', async (socket) => {
        // Requests without an acknowledgement callback get no reply, and must neither
        // crash the server nor close the socket.
        socket.socket.emit('subscribe');
        socket.socket.emit('subscribe', 42);
        socket.socket.emit('subscribe', 'not a payload');
        socket.socket.emit('subscribe', { accessToken: { nested: ['object'] } });
        socket.socket.emit('subscribe', { accessToken: 'nosuchsubj-0123456789abcdef' });
        await sleep(200);
        assert.ok(socket.connected, 'the socket was disconnected after subscribe requests without acknowledgement');

        assertRejected(await socket.subscribe('x'.repeat(100_000)), BAD_TOKEN, 'payload of a 100 kB string');
        const ack = await socket.subscribe({ accessToken: adminToken, collections: ['entries'] });
        assertGranted(ack, ['entries'], 'admin on the same socket after bad payloads');
      });

      await withSocket('after bad payloads', async (socket) => {
        const ack = await socket.subscribe({ accessToken: adminToken, collections: ['treatments'] });
        assertGranted(ack, ['treatments'], 'admin on a new socket');
      });

      const response = await fetch(`${url}/api/v3/version`);
      assert.equal(response.status, 200, `GET /api/v3/version returned ${response.status}: ${await response.text()}`);
    },
  ],
]);
