// A real OpenID provider for MediaNest's OIDC tests: panva/oidc-provider, in memory.
//
// Usage: node provider.mjs <port>   (0 picks a free port)
//
// The configuration comes as JSON in the environment variable OIDC_PROVIDER_CONFIG:
//   { "clients": [<client metadata>...], "jwks": {"keys": [<private JWK>...]},
//     "conformIdTokenClaims": false }
// The first signing key that fits a client's id_token_signed_response_alg signs its tokens.
//
// Protocol on stdout: one JSON object per line.
//   {"event": "ready", "issuer": "http://127.0.0.1:<port>"}    once listening
//   {"event": "rotated", "kids": [...]}                         after a rotation
// On stdin, a JSON line {"command": "rotate", "jwks": {...}} swaps in a new provider with
// the given keys on the same socket. Sessions, grants, codes and refresh tokens live in
// SharedMemoryAdapter, one store for every provider of this process, so they survive.
//
// Accounts: any login name the dev interactions accept; claims come from ACCOUNTS below,
// and an unknown name is refused at sign-in (findAccount returns nothing).

import http from 'node:http';
import readline from 'node:readline';

import Provider from 'oidc-provider';

const ACCOUNTS = {
  alice: {
    name: 'Alice Admin',
    preferred_username: 'alice',
    email: 'alice@example.test',
    email_verified: true,
    groups: ['media-admins', 'family'],
  },
  bob: {
    name: 'Bob Family',
    preferred_username: 'bob',
    email: 'bob@example.test',
    email_verified: true,
    groups: ['family'],
  },
  carol: {
    name: 'Carol Stranger',
    preferred_username: 'carol',
    email: 'carol@example.test',
    email_verified: false,
    groups: [],
  },
};

const config = JSON.parse(process.env.OIDC_PROVIDER_CONFIG || '{}');
const port = Number.parseInt(process.argv[2] ?? '0', 10);

// The adapter interface of oidc-provider, over one Map shared by every provider built here
// (its own memory adapter keeps a store per provider instance).
const store = new Map();
const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

function live(key) {
  const entry = store.get(key);
  if (entry && entry.expiresAt && entry.expiresAt < Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry?.value;
}

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : 0;
    store.set(this.key(id), { value: payload, expiresAt });
    if (this.model === 'Session') {
      store.set(`sessionUid:${payload.uid}`, { value: id, expiresAt });
    }
    if (payload.userCode) {
      store.set(`userCode:${payload.userCode}`, { value: id, expiresAt });
    }
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const members = live(grantKey) ?? new Set();
      members.add(this.key(id));
      store.set(grantKey, { value: members, expiresAt: 0 });
    }
  }

  async find(id) {
    return live(this.key(id));
  }

  async findByUid(uid) {
    const id = live(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = live(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = live(this.key(id));
    if (payload) {
      payload.consumed = Math.floor(Date.now() / 1000);
    }
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    for (const member of live(grantKey) ?? []) {
      store.delete(member);
    }
    store.delete(grantKey);
  }
}

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function buildProvider(issuer, jwks) {
  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients: config.clients ?? [],
    jwks,
    cookies: { keys: ['medianest-test-cookie-key-not-a-secret'] },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'groups'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    conformIdTokenClaims: config.conformIdTokenClaims ?? false,
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
    },
    pkce: { required: () => true },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    async findAccount(ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) {
        return undefined;
      }
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...account };
        },
      };
    },
  });
  provider.on('server_error', (ctx, error) => {
    process.stderr.write(`server_error: ${error.stack}\n`);
  });
  return provider;
}

const server = http.createServer();
let handler = () => {};
server.on('request', (req, res) => handler(req, res));

server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  handler = buildProvider(issuer, config.jwks).callback();
  emit({ event: 'ready', issuer });

  const commands = readline.createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    const message = JSON.parse(line);
    if (message.command === 'rotate') {
      handler = buildProvider(issuer, message.jwks).callback();
      emit({ event: 'rotated', kids: message.jwks.keys.map((key) => key.kid) });
    }
  });
  // The test process went away: stop too rather than linger as an orphan.
  commands.on('close', () => process.exit(0));
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
