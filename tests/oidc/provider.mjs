// A real OpenID Provider (panva's certified oidc-provider) for the gateway's
// bearer-token tests. Test-only: in-memory storage, plain http on loopback,
// well-known client secrets.
//
//   node tests/oidc/provider.mjs [PORT]      (or OIDC_PORT; 0 or none: any free port)
//
// Environment:
//   OIDC_JWKS_FILE         a JSON file {"keys": [private JWKs]} to sign with, so a test
//                          can hold the provider's keys or restart it with rotated ones;
//                          without it, fresh keys are generated at each start.
//   OIDC_ACCESS_TOKEN_ALG  the JWS alg of access tokens (default RS256), so a test can
//                          check the gateway with each algorithm a real issuer uses.
//   OIDC_CLOCK_START       the test clock's instant (milliseconds since 1970) when the
//                          provider starts: its time runs on from there, so tokens'
//                          iat and exp agree with the time of the gateway under test,
//                          not with the machine's. Without it, the machine's time.
//
// Standard input, one command a line, from the test harness:
//   SYNC N                         answered SYNCED N: every line printed before
//                                  (each JWKS_SERVED) has reached the harness
//   KEYS N FILE                    the issuer restarts at the same URL, on the same
//                                  listener, signing with the keys in FILE (as
//                                  OIDC_JWKS_FILE); answered SYNCED N once in force
//   REDIRECT N URI                 the console client (`ita-console`) may send
//                                  browsers back to URI, a gateway's
//                                  /console/callback known only once it listens;
//                                  the issuer restarts as for KEYS, with its keys
//
// People sign in to the console through the provider's development login
// form (any password), as one of ACCOUNTS; any other login is a person with
// no organisation or role, whom the gateway must refuse.
//
// Standard output, one line each, for the test harness to read:
//   ISSUER http://127.0.0.1:PORT   first, once listening
//   JWKS_SERVED                    each time the JWKS is fetched, so a test can
//                                  count the gateway's key refreshes
//   SYNCED N                       the answer to a command
// (oidc-provider may print notices on standard output too; the harness skips them.)

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import Provider, { errors } from 'oidc-provider';

// Every token the tests ask for has one of these audiences unless the request
// names another resource, which is how a test gets a wrong-audience token.
const DEFAULT_AUDIENCE = 'urn:referral-gateway:test';

// The organisation and roles each client's access tokens carry (claims
// `org_id` and `roles`), as an identity provider's client mapping would.
const CLIENTS = {
  'ita-nrm-system': { org_id: 'ita-nrm', roles: ['submitter'] },
  'ita-dpo-console': { org_id: 'ita-nrm', roles: ['dpo'] },
  'nga-naptip-system': { org_id: 'nga-naptip', roles: ['submitter'] },
  // Short enough for a test to see it expire.
  'short-lived': { org_id: 'ita-nrm', roles: ['submitter'], ttl: 1 },
  // Roles as one space-separated string, some unknown to the gateway.
  'ita-audit-tool': { org_id: 'ita-nrm', roles: 'auditor recipient janitor' },
  // Misconfigured clients the gateway must refuse.
  'no-org-client': { roles: ['submitter'] },
  'no-known-role-client': { org_id: 'ita-nrm', roles: ['janitor'] },
};

// The console's people: the organisation and roles their access tokens
// carry. Their `sub` is the login: opaque, never a name.
const ACCOUNTS = {
  'dpo-1': { org_id: 'ita-nrm', roles: ['dpo'] },
  'dpo-2': { org_id: 'ita-nrm', roles: ['dpo'] },
  'auditor-1': { org_id: 'ita-nrm', roles: ['auditor'] },
  'submitter-1': { org_id: 'ita-nrm', roles: ['submitter'] },
};

// The gateway's console, a confidential client of the authorization code flow.
const CONSOLE_CLIENT = 'ita-console';

const secretOf = (clientId) => `${clientId}-secret`;

// The test's clock: oidc-provider reads the time through Date.now (iat, exp).
if (process.env.OIDC_CLOCK_START) {
  const offset = Number(process.env.OIDC_CLOCK_START) - Date.now();
  if (!Number.isFinite(offset)) {
    throw new Error('OIDC_CLOCK_START must be milliseconds since 1970');
  }
  const machineNow = Date.now.bind(Date);
  Date.now = () => machineNow() + offset;
}

function signingKeys(file = process.env.OIDC_JWKS_FILE) {
  if (file) {
    return JSON.parse(readFileSync(file, 'utf8'));
  }
  // One key per algorithm family, so OIDC_ACCESS_TOKEN_ALG can pick any of them.
  // Encoded as JWK by the generation itself: exporting the KeyObject it returns
  // instead deadlocks Node.js 20 now and then (a garbage collection during the
  // export destroys the finished generation job, which takes the lock the
  // export holds: in gdb, a provider that never printed ISSUER; the harness's
  // "did not start" seen in CI looks the same).
  const asJwk = { publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } };
  const generated = [
    crypto.generateKeyPairSync('rsa', { modulusLength: 2048, ...asJwk }),
    crypto.generateKeyPairSync('ec', { namedCurve: 'P-256', ...asJwk }),
    crypto.generateKeyPairSync('ed25519', asJwk),
  ];
  return {
    keys: generated.map(({ privateKey }) => ({
      ...privateKey,
      kid: crypto.randomUUID(),
      use: 'sig',
    })),
  };
}

function configuration(keys, consoleRedirect) {
  const alg = process.env.OIDC_ACCESS_TOKEN_ALG || 'RS256';
  return {
    clients: [
      ...Object.keys(CLIENTS).map((clientId) => ({
        client_id: clientId,
        client_secret: secretOf(clientId),
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      })),
      {
        client_id: CONSOLE_CLIENT,
        client_secret: secretOf(CONSOLE_CLIENT),
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: [consoleRedirect],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: keys,
    cookies: { keys: [COOKIE_KEY] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    // The console is the organisation's own application: no consent screen.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      if (ctx.oidc.client.clientId !== CONSOLE_CLIENT) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: CONSOLE_CLIENT, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid');
      for (const resource of Object.keys(ctx.oidc.resourceServers ?? {})) {
        grant.addResourceScope(resource, 'referrals');
      }
      await grant.save();
      return grant;
    },
    // The gateway must send PKCE, confidential client or not.
    pkce: { required: () => true },
    features: {
      // The development login form: any login, any password.
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => DEFAULT_AUDIENCE,
        useGrantedResource: async () => true,
        // Any absolute URI the test names is a resource server, so that the
        // audience is under the test's control; its tokens are JWTs (RFC 9068).
        getResourceServerInfo: async (_ctx, resource) => {
          if (!resource.startsWith('urn:') && !resource.startsWith('https://')) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: 'referrals',
            audience: resource,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    extraTokenClaims: async (_ctx, token) => {
      if (token.accountId) return ACCOUNTS[token.accountId];
      const mapping = CLIENTS[token.clientId];
      if (!mapping) return undefined;
      const { ttl: _ttl, ...claims } = mapping;
      return claims;
    },
    ttl: {
      ClientCredentials: (_ctx, _token, client) => CLIENTS[client.clientId]?.ttl ?? 300,
    },
  };
}

// One cookie key for the process, kept across restarts.
const COOKIE_KEY = crypto.randomBytes(32).toString('base64url');

// A provider for `issuer`; its JWKS fetches are reported on standard output.
function provider(issuer, keys, consoleRedirect) {
  const created = new Provider(issuer, configuration(keys, consoleRedirect));
  // The provider ran on in the test's time: its own cookies would carry
  // expiry dates of that time, which the browser (on the machine's time)
  // could take as past. They go as session cookies; deletions stay.
  created.use(async (ctx, next) => {
    await next();
    const cookies = ctx.response.get('set-cookie');
    if (Array.isArray(cookies) && cookies.length > 0) {
      ctx.set('set-cookie', cookies.map((cookie) => (
        cookie.includes('expires=Thu, 01 Jan 1970') ? cookie : cookie.replace(/; expires=[^;]*/gi, '')
      )));
    }
  });
  created.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/jwks' && ctx.status === 200) {
      // Printed before the response goes out (and pipes are synchronous on
      // Linux): the harness has this line before the fetch has its keys.
      console.log('JWKS_SERVED');
    }
  });
  return created.callback();
}

const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const server = createServer();
let handle = null;
let issuer = null;
let keys = signingKeys();
// Until a gateway names its own (REDIRECT), one no browser reaches.
let consoleRedirect = 'https://127.0.0.1/console/callback';
server.on('request', (req, res) => handle(req, res));
server.listen(port, '127.0.0.1', () => {
  // The issuer names the actual port, known only once listening (port 0).
  issuer = `http://127.0.0.1:${server.address().port}`;
  handle = provider(issuer, keys, consoleRedirect);
  console.log(`ISSUER ${issuer}`);
});

// Commands from the harness (which sends them only once it read ISSUER). It holds
// our stdin open: when it goes away, even without a chance to kill us (a
// crashed test binary), so do we.
function commands() {
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const [command, n, ...rest] = line.split(' ');
    if (command === 'KEYS') {
      keys = signingKeys(rest.join(' '));
      handle = provider(issuer, keys, consoleRedirect);
    } else if (command === 'REDIRECT') {
      consoleRedirect = rest.join(' ');
      handle = provider(issuer, keys, consoleRedirect);
    } else if (command !== 'SYNC') {
      console.error(`unknown command ${command}`);
      return;
    }
    console.log(`SYNCED ${n}`);
  });
  lines.on('close', () => process.exit(0));
}
process.stdin.on('error', () => process.exit(0));
commands();
