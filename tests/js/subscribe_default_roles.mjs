// Checks that the roles in AUTH_DEFAULT_ROLES count for `subscribe`: with the
// default (readable, that is *:*:read) a subject whose own role is denied is
// granted every collection but settings, which needs api:settings:admin.
//
// Environment:
//   NIGHTJAR_URL       edge base URL of a server started without AUTH_DEFAULT_ROLES
//   SOCKET_IO_CLIENT   "4" (socket.io-client 4.x) or "2" (socket.io-client 2.2.0)
//   DENIED_TOKEN       access token of a subject with role denied

import {
  ALL_COLLECTIONS,
  assertGranted,
  assertRejected,
  clientVersion,
  connectStorage,
  edgeUrl,
  requireEnv,
  runScenarios,
} from './lib.mjs';

const url = edgeUrl();
const version = clientVersion();
const deniedToken = requireEnv('DENIED_TOKEN');

await runScenarios(`subscribe with default roles, client ${version}`, [
  [
    'default roles grant read access',
    async () => {
      const socket = await connectStorage(url, version, 'denied subject');
      try {
        const ack = await socket.subscribe({ accessToken: deniedToken });
        const readable = ALL_COLLECTIONS.filter((name) => name !== 'settings');
        assertGranted(ack, readable, 'denied subject with default role readable');

        const settings = await socket.subscribe({ accessToken: deniedToken, collections: ['settings'] });
        assertRejected(settings, 'Unauthorized to receive any collection', 'denied subject, settings');
      } finally {
        socket.close();
      }
    },
  ],
]);
